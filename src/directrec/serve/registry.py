"""Model registry: a directory of immutable, versioned model artefacts.

Layout: `REGISTRY/v0001/` holds a model directory (config.json, ids.json,
weights.safetensors) plus `manifest.json` with the sha256 of every file; `REGISTRY/CURRENT`
names the version to serve. Publishing builds the version aside and renames it into place,
then rewrites CURRENT atomically, so a reader sees the old version or the new one, never a
half-written one; a publish that fails to write CURRENT (a full disk) withdraws its
version, so a failed publish leaves the registry as it was. Loading checks every hash
first: a truncated or altered artefact is rejected before any of it is used. Publishing
loads the model and runs the canary (serve/canary.py) on the copy it is about to publish:
a version that cannot build sound lists never gets a number, and the canary's NDCG@10
against a store is recorded in the manifest as the figure later canaries (reload,
watcher) are held to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

from directrec.models.artifacts import read_config
from directrec.serve.canary import CanaryConfig, check_version
from directrec.serve.forgotten import check_artefact

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
_VERSION = re.compile(r"v(\d{4,})\Z")  # \Z, not $: "v0001\n" is no version name


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_registry(path: str | Path) -> bool:
    path = Path(path)
    return (path / CURRENT).exists() or any(_VERSION.match(p.name) for p in _dirs(path))


def _dirs(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_dir()] if path.is_dir() else []


def versions(registry: str | Path) -> list[str]:
    """Published versions, oldest first."""
    return sorted(
        (p.name for p in _dirs(Path(registry)) if _VERSION.match(p.name)),
        key=lambda n: int(n[1:]),
    )


def current(registry: str | Path) -> str:
    """The version CURRENT names (or the newest, if CURRENT is missing)."""
    path = Path(registry) / CURRENT
    if path.exists():
        name = path.read_text().strip()
        if not _VERSION.match(name):
            raise ValueError(f"{path}: not a version name: {name!r}")
        return name
    found = versions(registry)
    if not found:
        raise ValueError(f"{registry}: no published model versions")
    return found[-1]


def verify(version_dir: str | Path) -> dict:
    """The manifest, after checking that every listed file exists with its hash and that
    nothing else is missing. Raises ValueError naming the first bad file."""
    version_dir = Path(version_dir)
    try:
        manifest = json.loads((version_dir / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{version_dir}: missing or unreadable {MANIFEST} ({e})") from e
    for name in ("config.json", "weights.safetensors"):
        if name not in files:
            raise ValueError(f"{version_dir}: manifest does not list {name}")
    for name, digest in files.items():
        f = version_dir / name
        if "/" in name or name.startswith(".") or not f.is_file():
            raise ValueError(f"{version_dir}: {name} is missing")
        if sha256(f) != digest:
            raise ValueError(f"{version_dir}: {name} does not match its sha256 in {MANIFEST}")
    return manifest


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk: the old file stands, no temporary one beside it
        Path(tmp).unlink(missing_ok=True)
        raise


def set_current(registry: str | Path, version: str) -> None:
    registry = Path(registry)
    verify(registry / version)
    _write_atomic(registry / CURRENT, version + "\n")


def publish(
    model_dir: str | Path,
    registry: str | Path,
    make_current: bool = True,
    db: str | Path | None = None,
    canary: CanaryConfig = CanaryConfig(),
    forgotten: Collection[str] = (),
) -> str:
    """Copy a saved model into the registry as the next version; returns its name.
    `forgotten`: the store's forgotten-user hashes; the copy is checked against them
    (serve/forgotten.py: refused for per-user factors, else those ids are dropped). The
    copy is then loaded and canaried (on `db`'s users, else on synthetic histories): a
    refused model raises canary.Refused and leaves the registry as it was."""
    model_dir, registry = Path(model_dir), Path(registry)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir}: not a directrec model directory (no config.json)")
    read_config(model_dir)  # a JSON object with every field, or an error naming the file
    created = not registry.exists()
    registry.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".publish.", dir=registry))
    try:
        for f in sorted(model_dir.iterdir()):
            if f.is_file() and f.name != MANIFEST:
                shutil.copyfile(f, tmp / f.name)
        check_artefact(tmp, forgotten)
        _, report = check_version(tmp, db, canary, label=model_dir.name)
        files = {f.name: sha256(f) for f in sorted(tmp.iterdir())}
        config = json.loads((tmp / "config.json").read_text())
        manifest = {
            "model": config.get("model"),
            "created": time.time(),
            "files": files,
            "source": str(model_dir),
            # the next canaries' reference: only a figure measured on stored users counts
            "canary": report.record() if db is not None else {"lists": report.lists},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for f in tmp.iterdir():  # durable before it becomes visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        while True:  # another publisher may take a number first: take the next one
            found = versions(registry)
            name = f"v{int(found[-1][1:]) + 1 if found else 1:04d}"
            try:
                os.rename(tmp, registry / name)
                break
            except OSError:
                if not (registry / name).exists():
                    raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(registry.iterdir()):
            registry.rmdir()
        raise
    if make_current:
        try:
            set_current(registry, name)
        except BaseException:  # CURRENT unwritten (a full disk): withdraw the version too,
            # so a failed publish leaves the registry exactly as it was
            aside = registry / f".withdrawn.{name}.{os.getpid()}"
            with contextlib.suppress(OSError):
                os.rename(registry / name, aside)  # a dot name: no longer a version
                shutil.rmtree(aside, ignore_errors=True)
            raise
    return name


def resolve(path: str | Path, version: str | None = None) -> tuple[Path, str]:
    """(model directory, version label) for a registry (its CURRENT or `version`) or a
    plain model directory (labelled by the hash of its files, not verified)."""
    path = Path(path)
    if (path / "config.json").is_file() and not is_registry(path):
        digest = hashlib.sha256()
        for name in ("config.json", "weights.safetensors"):
            if (path / name).exists():
                digest.update(sha256(path / name).encode())
        return path, "local-" + digest.hexdigest()[:12]
    if not path.is_dir():
        raise ValueError(f"{path}: no such model directory or registry")
    version = version or current(path)
    if not _VERSION.match(version):
        raise ValueError(f"not a version name: {version!r}")
    verify(path / version)
    return path / version, version
