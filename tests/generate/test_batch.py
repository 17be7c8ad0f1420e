"""Batch generation: every user's top-K in one Parquet file, streamed, atomic, the same
with one process or two under torchrun (gloo on CPU)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from directrec.data.dataset import Dataset
from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest, open_store
from directrec.generate import batch
from directrec.models import create, load_model
from directrec.serve.registry import resolve
from tests.conftest import planted_frames


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    inter, items = planted_frames(n_users=90)
    db = d / "store.duckdb"
    frame = make_interactions(inter["user_id"], inter["item_id"], timestamp=inter["timestamp"])
    ingest(db, RawData(frame, items))
    ds = Dataset.from_store(db)
    model = create("ease", {"l2": 50.0}).fit(ds.interactions)
    model.meta.update(user_ids=ds.users.ids.tolist(), item_ids=ds.items.ids.tolist())
    return db, model.save(d / "model")


def read(path):
    return pq.read_table(path).to_pandas().sort_values(["user_id", "rank"], ignore_index=True)


def test_every_user_gets_k_unseen_items_with_provenance(world, tmp_path):
    db, model_dir = world
    path, version = resolve(model_dir)
    facts = batch.generate(
        load_model(path), version, db, tmp_path / "recs.parquet", 7, batch_size=16
    )
    df = read(tmp_path / "recs.parquet")
    with open_store(db) as s:
        users, seqs, fingerprint = s.user_ids(), s.histories(s.user_ids()), s.meta()["fingerprint"]
    assert facts["users"] == len(users) == 90 and len(df) == 90 * 7
    assert set(df["model_version"]) == {version} and set(df["model"]) == {"ease"}
    assert set(df["data_fingerprint"]) == {fingerprint}
    for u, g in df.groupby("user_id"):
        assert g["rank"].tolist() == list(range(1, 8))
        assert not set(g["item_id"]) & set(seqs[u])  # unseen
        assert (np.diff(g["score"].to_numpy()) <= 1e-6).all()  # best first
    assert not list(tmp_path.glob(".*tmp"))  # nothing left behind


def test_a_large_catalogue_scores_fewer_users_per_call(world, tmp_path, monkeypatch):
    """One call's dense [users, items] scores stay near SCORES_PER_BATCH floats: with room
    for 3 rows of this catalogue, the 90 users go 3 per call, and the lists are the same."""
    from directrec.generate import pipeline

    db, model_dir = world
    path, version = resolve(model_dir)
    model = load_model(path)
    assert (
        pipeline.rows_per_batch(10**6, 1024) == 134 and pipeline.rows_per_batch(10**4, 1024) == 1024
    )
    batch.generate(model, version, db, tmp_path / "wide.parquet", 5, batch_size=64)
    calls = []
    real = batch.recommend
    monkeypatch.setattr(pipeline, "SCORES_PER_BATCH", 3 * model.n_items + 1)
    monkeypatch.setattr(
        batch, "recommend", lambda m, h, *a, **kw: calls.append(len(h)) or real(m, h, *a, **kw)
    )
    batch.generate(model, version, db, tmp_path / "narrow.parquet", 5, batch_size=64)
    assert calls == [3] * 30
    assert read(tmp_path / "narrow.parquet").equals(read(tmp_path / "wide.parquet"))


def test_listed_users_only_and_unknown_ones_fall_back(world, tmp_path):
    db, model_dir = world
    path, version = resolve(model_dir)
    users = tmp_path / "users.txt"
    users.write_text("u3\n\n u5 \nnobody\n")
    batch.generate(
        load_model(path), version, db, tmp_path / "r.parquet", 5, batch.read_user_file(users)
    )
    df = read(tmp_path / "r.parquet")
    assert sorted(set(df["user_id"])) == ["nobody", "u3", "u5"]
    assert df.groupby("user_id")["fallback"].first().to_dict() == {
        "nobody": True,
        "u3": False,
        "u5": False,
    }


def test_a_failed_run_leaves_no_output(world, tmp_path, monkeypatch):
    db, model_dir = world
    path, version = resolve(model_dir)
    calls = {"n": 0}
    real = batch.recommend

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real(*a, **kw)

    monkeypatch.setattr(batch, "recommend", flaky)
    with pytest.raises(RuntimeError):
        batch.generate(load_model(path), version, db, tmp_path / "r.parquet", 5, batch_size=10)
    assert not list(tmp_path.iterdir())  # neither the output nor a temporary file


@pytest.mark.skipif(
    shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
    reason="torchrun not installed beside this Python",
)
def test_two_processes_under_torchrun_write_what_one_writes(world, tmp_path):
    db, model_dir = world
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    one = [
        sys.executable,
        "-m",
        "directrec",
        "generate",
        "--model",
        str(model_dir),
        "--db",
        str(db),
        "--k",
        "6",
        "--out",
        str(tmp_path / "one.parquet"),
    ]
    two = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "directrec",
        "generate",
        "--model",
        str(model_dir),
        "--db",
        str(db),
        "--k",
        "6",
        "--batch-size",
        "8",
        "--out",
        str(tmp_path / "two.parquet"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd in (one, two):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
    a, b = read(tmp_path / "one.parquet"), read(tmp_path / "two.parquet")
    assert len(a) == 90 * 6
    assert a[["user_id", "rank", "item_id"]].equals(b[["user_id", "rank", "item_id"]])
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.parquet", "two.parquet"]
