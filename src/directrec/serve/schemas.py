"""Request bodies and error responses of the HTTP API: bounded sizes, strict fields
(unknown fields are a 422, `"10"` or `true` is no integer), text that is valid unicode
without NUL characters, timestamps in Unix seconds or ISO-8601 as ingest reads them; and
the guard every API route runs on its query string (unknown or repeated parameters)."""

from __future__ import annotations

import re
import secrets
import types
import typing
from typing import Annotated, Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from directrec.data.times import ISO_START
from directrec.serve.feedback import EVENT_TYPES


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    """The one error body: {"error": {"status", "message", ...}}."""
    return JSONResponse({"error": {"status": status, "message": message, **extra}}, status)


# A URL (it may carry credentials) or an absolute file path: a response shows neither.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
# ValueErrors raised inside these libraries are worded for their own callers, not ours
_LIBRARIES = frozenset({"json", "numpy", "pandas", "safetensors", "torch", "duckdb", "pyarrow"})
_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/:'\"(),]+/)*([^\s/:'\"(),]*)")


def public_reason(e: BaseException) -> str | None:
    """What an expected error (a ValueError: bad input or a rejected artefact, worded for
    users) may tell a client: its message with URLs hidden and absolute paths cut to their
    last part. None for any other error, whose text may expose internals: the caller logs
    it and answers with an error id."""
    if not isinstance(e, ValueError) or type(e).__module__.split(".")[0] in _LIBRARIES:
        return None
    return _PATH.sub(r"\1", _URL.sub("<url>", str(e)))


def error_id() -> str:
    """A short id that ties a 5xx answer to its line in the server log."""
    return secrets.token_hex(6)


def _text(v: str) -> str:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("not valid unicode text") from e
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


def unix_seconds(v: Any) -> Any:
    """An ISO-8601 date or date-time (`2024-05-01`, `2024-05-01T12:00:00Z`, an offset;
    none means UTC, as ingest reads them) as Unix seconds; numbers pass unchanged."""
    if not isinstance(v, str):
        return v
    import pandas as pd

    try:  # the parser ingest uses (data/times.py), on one value
        ok = re.match(ISO_START, v) is not None  # not "now" or "today", which pandas reads
        parsed = pd.to_datetime(v, utc=True, format="ISO8601") if ok else pd.NaT
    except (ValueError, OverflowError):
        parsed = pd.NaT
    if parsed is pd.NaT:
        raise ValueError(f"expected Unix seconds or an ISO-8601 date/time, got {v[:64]!r}")
    return parsed.timestamp()


def digits(v: Any) -> Any:
    """A query string's integer strictly: digits only (not "10.0", "1e1", " 10", "true")."""
    if isinstance(v, str) and not re.fullmatch(r"[0-9]{1,9}", v):
        raise ValueError("must be a whole number written in digits")
    return v


Id = Annotated[str, Field(min_length=1, max_length=256)]
QueryInt = Annotated[int, BeforeValidator(digits)]  # an integer query parameter
Timestamp = Annotated[float, BeforeValidator(unix_seconds)]


class Strict(BaseModel):
    # strict: no lax coercion ("10" or true for an integer, 1 or "yes" for a boolean);
    # an integer still passes where a float is expected.
    model_config = ConfigDict(extra="forbid", strict=True)


class EventIn(Strict):
    user_id: Id
    item_id: Id
    type: str = Field(description="one of " + ", ".join(EVENT_TYPES))
    timestamp: Timestamp | None = Field(
        None,
        ge=0,
        le=1e11,
        allow_inf_nan=False,
        description="Unix seconds or an ISO-8601 date/time (UTC unless it names an offset)",
    )
    value: float | None = Field(None, ge=-1e6, le=1e6, allow_inf_nan=False)
    idempotency_key: str | None = Field(None, min_length=1, max_length=128)

    @field_validator("user_id", "item_id", "idempotency_key")
    @classmethod
    def _ok_text(cls, v: str | None) -> str | None:
        return None if v is None else _text(v)

    @field_validator("type")
    @classmethod
    def _ok_type(cls, v: str) -> str:
        if v not in EVENT_TYPES:
            raise ValueError("must be one of " + ", ".join(EVENT_TYPES))
        return v


class FeedbackIn(Strict):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class AdHocIn(Strict):
    history: list[Id] = Field(default_factory=list, max_length=1000)
    query: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="a new user's wish in words: its nearest items become the history",
    )
    k: int = Field(10, ge=1)
    exclude_seen: bool = True
    exclude_items: list[Id] = Field(default_factory=list, max_length=1000)
    exclude_categories: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=100
    )
    # None: the model's fitted diversify stage decides (the model's order without one)
    diversity: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    explain: bool = False

    @field_validator("history", "exclude_items", "exclude_categories")
    @classmethod
    def _ok_texts(cls, v: list[str]) -> list[str]:
        return [_text(x) for x in v]

    @field_validator("query")
    @classmethod
    def _ok_query(cls, v: str | None) -> str | None:
        return None if v is None else _text(v)


class ReloadIn(Strict):
    version: str | None = Field(None, max_length=64)


class ForgetIn(Strict):
    user_id: str = Field(min_length=1, max_length=256)

    @field_validator("user_id")
    @classmethod
    def _ok_user(cls, v: str) -> str:
        return _text(v)


class UpdateIn(Strict):
    epochs: int = Field(2, ge=0, le=50)
    tolerance: float = Field(0.02, ge=0.0, le=1.0, allow_inf_nan=False)
    min_gate_users: int = Field(20, ge=0, le=10**9)


def path_text(v: str) -> str:
    """A path or query parameter checked like body text (a 422 if it is not)."""
    try:
        return _text(v)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e


# Query parameters that were renamed: refused like any unknown one, with the new name.
RENAMED = {"limit": "k"}
ROUTING = {
    404: "no such endpoint (the API is listed at /docs)",
    405: "method not allowed here (the Allow header lists those that are)",
}


def _takes_many(annotation: Any) -> bool:
    """Whether a query parameter's type is a list (given once per value: `?c=a&c=b`)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_many(a) for a in typing.get_args(annotation))
    return origin is list


def known_query(request: Request) -> None:
    """Every API route's guard: a query parameter the route does not take (a typo such as
    `?kk=5` would otherwise be ignored without a word) or a single-valued one given twice
    is a 422. The page, favicon and metrics (outside the API schema) are left alone: a
    link to the page may carry a tracking parameter."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not getattr(route, "include_in_schema", True):
        return
    takes = getattr(route, "_directrec_query", None)  # computed once per route
    if takes is None:
        takes, todo = {}, [dependant]
        while todo:
            d = todo.pop()
            takes.update({f.alias: _takes_many(f.field_info.annotation) for f in d.query_params})
            todo.extend(d.dependencies)
        route._directrec_query = takes
    given = request.query_params
    fields = []
    for name in dict.fromkeys(given):
        if name not in takes:
            hint = f"renamed {RENAMED[name]!r}" if RENAMED.get(name) in takes else None
            hint = hint or "this endpoint takes " + (", ".join(sorted(takes)) or "none")
            fields.append({"field": f"query.{name[:64]}", "message": f"unknown parameter; {hint}"})
        elif not takes[name] and len(given.getlist(name)) > 1:
            fields.append({"field": f"query.{name}", "message": "given more than once"})
    if fields:
        raise HTTPException(422, {"message": "invalid request", "fields": fields[:20]})
