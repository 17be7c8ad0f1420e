"""A disk that fills during `directrec ingest`: the command fails with one clear line (no
traceback) and the store keeps exactly what it held; a new store leaves no file behind.
The disk is a small tmpfs (needs root and `mount`; the test is skipped otherwise)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest
from tests.conftest import planted_frames


@contextlib.contextmanager
def small_disk(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted at `path` for the block; skips the test where
    mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is simulated with a small tmpfs: needs root and mount")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size // 1024 + 1}k", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "directrec.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "400"},
    )


def info(db: Path) -> dict:
    res = cli("info", "--db", str(db))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def assert_disk_full_error(res: subprocess.CompletedProcess) -> None:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    *progress, error = res.stderr.strip().splitlines()
    assert all(line.endswith("…") for line in progress), res.stderr  # a step's start line
    assert error.startswith("error: disk full") and "no space left" in error.lower(), res.stderr


def csv_of(n_users: int, seed: int, path: Path) -> Path:
    inter, _ = planted_frames(n_users=n_users, seed=seed)
    inter[["user_id", "item_id", "timestamp", "rating"]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """(a small store, a CSV of data far larger than it)."""
    d = tmp_path_factory.mktemp("full-disk")
    inter, items = planted_frames(n_users=50)
    frame = make_interactions(
        inter["user_id"], inter["item_id"], timestamp=inter["timestamp"], rating=inter["rating"]
    )
    ingest(d / "small.duckdb", RawData(frame, items))
    return d / "small.duckdb", csv_of(3000, 1, d / "big.csv")


@pytest.mark.parametrize("append", [False, True])
def test_ingest_into_a_full_disk_keeps_the_store_as_it_was(files, tmp_path, append):
    small, big = files
    used = os.stat(small).st_blocks * 512
    with small_disk(tmp_path / "disk", used + 512 * 1024) as disk:
        db = disk / "store.duckdb"
        shutil.copyfile(small, db)
        before = info(db)
        extra = ["--append"] if append else []
        res = cli("ingest", "--db", str(db), "--interactions", str(big), *extra)
        assert_disk_full_error(res)
        assert info(db) == before  # counts, source and fingerprint
        left = {p.name for p in disk.iterdir()} - {"store.duckdb", "store.duckdb.wal"}
        assert not left, left
        wal = disk / "store.duckdb.wal"
        assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("size_kb", [40, 900])
def test_ingest_of_a_new_store_on_a_full_disk_leaves_no_file(files, tmp_path, size_kb):
    """Tiny: the write fails at the commit; larger: at the checkpoint after it."""
    _, big = files
    small_csv = csv_of(50, 0, tmp_path / "small.csv")
    with small_disk(tmp_path / "disk", size_kb * 1024) as disk:
        db = disk / "store.duckdb"
        res = cli("ingest", "--db", str(db), "--interactions", str(small_csv))
        assert_disk_full_error(res)
        assert list(disk.iterdir()) == []
        res = cli("info", "--db", str(db))
        assert res.returncode != 0 and "store not found" in res.stderr
    assert big.exists()
