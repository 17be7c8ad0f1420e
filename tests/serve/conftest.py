"""A real service on 127.0.0.1: a tiny planted store, a small trained generator published
to a registry, and `directrec serve` started as a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from directrec.data.dataset import Dataset
from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest
from directrec.models import create
from directrec.serve import registry
from tests.conftest import planted_frames

TOKEN = "test-admin-token"
GEN = {"max_len": 30, "dim": 32, "epochs": 15, "batch_size": 32, "lr": 3e-3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_into(db: Path, reg: Path, seed: int = 0) -> str:
    ds = Dataset.from_store(db)
    model = create("sasrec-ce", {**GEN, "seed": seed}).fit(ds.interactions)
    model.meta.update(user_ids=ds.users.ids.tolist(), item_ids=ds.items.ids.tolist())
    model.save(reg.parent / f"model-{seed}")
    return registry.publish(reg.parent / f"model-{seed}", reg)


class Server:
    def __init__(self, reg: Path, db: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "directrec.cli",
            "serve",
            "--model",
            str(reg),
            "--db",
            str(db),
            "--port",
            str(self.port),
            "--admin-token",
            TOKEN,
            "--watch-seconds",
            "0.5",
            "--threads",
            "1",
            *extra,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server died:\n" + self.proc.stdout.read().decode())
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become ready")

    def stop(self) -> str:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.stdout.read().decode()


@pytest.fixture(scope="package")
def world(tmp_path_factory):
    """(store path, registry path) with one published version."""
    d = tmp_path_factory.mktemp("serve")
    inter, items = planted_frames(n_users=120)
    db = d / "store.duckdb"
    frame = make_interactions(
        inter["user_id"], inter["item_id"], timestamp=inter["timestamp"], rating=inter["rating"]
    )
    ingest(db, RawData(frame, items))
    reg = d / "registry"
    train_into(db, reg, seed=0)
    return db, reg


@pytest.fixture(scope="package")
def server(world):
    db, reg = world
    s = Server(reg, db)
    yield s
    s.stop()


@pytest.fixture
def own_world(world, tmp_path):
    """A private copy of the store and registry (these tests publish versions)."""
    db, reg = world
    shutil.copy(db, tmp_path / "store.duckdb")
    shutil.copytree(reg, tmp_path / "registry")
    return tmp_path / "store.duckdb", tmp_path / "registry"
