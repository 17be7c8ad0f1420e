"""Who may post feedback: per-user signed tokens, and the check that refuses to expose an
open feedback endpoint by accident.

A user token is `<user id, base64url>.<expiry, unix seconds or 0 for none>.<signature>`,
the signature an HMAC-SHA256 over the user id and expiry with the server's key. The server
stores nothing per user: any process holding the key checks any token, and a token
only lets its holder post events for the user it names. A browser or an app can hold its
own user's token; the shared `--feedback-token` stays for a trusted backend.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import time
from pathlib import Path

MIN_KEY_BYTES = 16  # shorter keys are guessable offline from one token
_DOMAIN = b"directrec-feedback-token-v1\x00"  # a signature made for another purpose never fits


class TokenError(ValueError):
    """A token that does not grant anything: malformed, tampered, signed with another key,
    or expired. The message says which, without echoing the token."""


_B64 = re.compile(r"[A-Za-z0-9_-]+")
_EXPIRES = re.compile(r"[0-9]{1,12}")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_key(key: str) -> bytes:
    """The key as bytes, refused when too short to keep tokens unforgeable."""
    raw = key.encode("utf-8")
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"the token key must be at least {MIN_KEY_BYTES} bytes long")
    return raw


def read_key(key: str | None, key_file: Path | None) -> bytes | None:
    """The signing key from `--token-key` (or its environment variable) or a key file
    (its first line), or None when neither is given."""
    if key is not None and key_file is not None:
        raise ValueError("give the token key or a key file, not both")
    if key_file is not None:
        try:
            lines = key_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{key_file}: cannot read the token key ({e})") from e
        key = lines[0].strip() if lines else ""
    return None if key is None else check_key(key)


def _signature(key: bytes, user: str, expires: int) -> bytes:
    msg = _DOMAIN + user.encode("utf-8") + b"\x00" + str(expires).encode("ascii")
    return hmac.new(key, msg, hashlib.sha256).digest()


def issue(key: bytes, user: str, expires_in: float | None = None, now: float | None = None) -> str:
    """A token letting its holder post feedback for `user`, for `expires_in` seconds (None:
    until the key changes)."""
    if not user:
        raise ValueError("a token needs a non-empty user id")
    expires = 0 if expires_in is None else int((time.time() if now is None else now) + expires_in)
    return ".".join(
        (_b64(user.encode("utf-8")), str(expires), _b64(_signature(key, user, expires)))
    )


def verify(key: bytes, token: str, now: float | None = None) -> str:
    """The user id a valid token names; TokenError otherwise."""
    parts = token.split(".")
    # ASCII digits only, bounded: str.isdigit takes "²" and int() of 5,000 digits raises
    if (
        len(parts) != 3
        or not _EXPIRES.fullmatch(parts[1])
        or not all(map(_B64.fullmatch, parts[::2]))
    ):
        raise TokenError("malformed token")
    try:
        user = _unb64(parts[0]).decode("utf-8")
        given = _unb64(parts[2])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise TokenError("malformed token") from None
    expires = int(parts[1])
    # Constant time: how much of a forged signature matches leaks nothing.
    if not hmac.compare_digest(given, _signature(key, user, expires)):
        raise TokenError("token signature does not match")
    if expires and expires <= (time.time() if now is None else now):
        raise TokenError("token expired")
    return user


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface


def check_exposure(
    host: str, feedback_token: str | None, token_key: bytes | None, open_feedback: bool
) -> None:
    """Refuse to serve an open feedback endpoint beyond this machine unless asked: anyone
    who reaches it could rewrite any user's history."""
    if feedback_token or token_key or open_feedback or is_loopback(host):
        return
    raise ValueError(
        f"--host {host} would let anyone who reaches it post feedback for any user: set "
        "--feedback-token (a trusted backend) and/or --token-key (per-user tokens from "
        "`directrec token`), or pass --open-feedback to accept that"
    )
