"""Distributed training with torchrun (2 CPU processes, gloo): the same global batch and
seed give the weights one process gives, within float tolerance, and a 2-process run
learns (beats popularity on planted data, measured with `directrec evaluate`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest
from directrec.models import load_model
from tests.conftest import planted_frames

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
pytestmark = pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun not installed")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    inter, items = planted_frames()
    path = tmp_path_factory.mktemp("ddp") / "store.duckdb"
    ingest(
        path,
        RawData(
            make_interactions(inter["user_id"], inter["item_id"], timestamp=inter["timestamp"]),
            items,
        ),
    )
    return path


def run(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def train(db, out, nproc: int, *settings: str, model: str = "sasrec-ce") -> None:
    base = ["-m", "directrec", "train", model, "--db", str(db), "--out", str(out)]
    sets = [x for s in settings for x in ("--set", s)]
    if nproc == 1:
        run([sys.executable, *base, *sets])
    else:
        run([TORCHRUN, "--standalone", "--nproc_per_node", str(nproc), *base, *sets])


SMALL = ("max_len=20", "dim=16", "heads=2", "layers=1", "lr=3e-3", "threads=1")


def test_two_processes_match_one_with_the_same_global_batch(db, tmp_path):
    same = (*SMALL, "dropout=0", "batch_size=32", "epochs=3", "eval_every=3", "patience=1")
    train(db, tmp_path / "one", 1, *same)
    train(db, tmp_path / "two", 2, *same)
    a, b = load_model(tmp_path / "one"), load_model(tmp_path / "two")
    assert b.meta["processes"] == 2 and "processes" not in a.meta
    assert [r["epoch"] for r in a.meta["train_log"]] == [r["epoch"] for r in b.meta["train_log"]]
    # Reductions run in another order across two processes; Adam turns near-zero gradient
    # noise (e.g. on key biases, to which softmax is blind) into steps of up to lr, so
    # weights agree to about one step, and what the model computes agrees closely.
    lr = 3e-3
    for (name, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        assert (x - y).abs().max() <= 2 * lr, (name, (x - y).abs().max())
    from directrec.data.dataset import Dataset
    from directrec.data.histories import Histories

    h = Histories.from_interactions(Dataset.from_store(db).interactions, range(50))
    sa, sb = a.score(h), b.score(h)
    assert (sa - sb).abs().mean() <= 0.01 * sa.std()
    la = [r["loss"] for r in a.meta["train_log"]]
    lb = [r["loss"] for r in b.meta["train_log"]]
    assert la == pytest.approx(lb, rel=1e-3)


def test_a_two_process_run_learns(db, tmp_path):
    cmd = [
        TORCHRUN,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "directrec",
        "train",
        "sasrec-ce",
        "--db",
        str(db),
        "--out",
        str(tmp_path / "m"),
        "--holdout",
        "loo",
        *[x for s in (*SMALL, "epochs=20", "batch_size=32", "eval_every=5") for x in ("--set", s)],
    ]
    run(cmd)
    got = {}
    for name, path in (("sasrec", tmp_path / "m"), ("pop", tmp_path / "pop")):
        if name == "pop":
            run(
                [
                    sys.executable,
                    "-m",
                    "directrec",
                    "train",
                    "pop",
                    "--db",
                    str(db),
                    "--out",
                    str(path),
                    "--holdout",
                    "loo",
                ]
            )
        run(
            [
                sys.executable,
                "-m",
                "directrec",
                "evaluate",
                "--model",
                str(path),
                "--db",
                str(db),
                "--k",
                "10",
                "--out",
                str(tmp_path / f"eval-{name}"),
            ]
        )
        doc = json.loads((tmp_path / f"eval-{name}" / "results.json").read_text())
        got[name] = doc["results"][0]["metrics"]["hr@10"]
    assert got["sasrec"] >= max(2 * got["pop"], got["pop"] + 0.2), got


def test_a_two_process_run_resumes_where_it_stopped(db, tmp_path):
    """Rank 0 checkpoints; a 2-process run stopped after 2 epochs and resumed to 4 (every
    rank reads the checkpoint) ends where an uninterrupted 2-process run of 4 epochs ends."""
    same = (*SMALL, "dropout=0", "batch_size=32", "eval_every=2", "patience=5")
    train(db, tmp_path / "whole", 2, *same, "epochs=4", f"checkpoint_dir={tmp_path / 'ck1'}")
    ck = f"checkpoint_dir={tmp_path / 'ck2'}"
    train(db, tmp_path / "half", 2, *same, "epochs=2", ck)
    progress = json.loads((tmp_path / "ck2" / "progress.json").read_text())
    assert progress["epoch"] == 2
    train(db, tmp_path / "resumed", 2, *same, "epochs=4", ck)
    a, b = load_model(tmp_path / "whole"), load_model(tmp_path / "resumed")
    assert [r["epoch"] for r in b.meta["train_log"]] == [r["epoch"] for r in a.meta["train_log"]]
    for (name, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        assert (x - y).abs().max() <= 1e-5, (name, (x - y).abs().max())


@pytest.mark.parametrize("arch", ["encdec", "causal"])
def test_semantic_id_two_processes_match_one(db, tmp_path, arch):
    """The semantic-ID generator under DDP: every rank trains against rank 0's codes, and
    the same global batch and seed give one process's losses and (closely) its weights."""
    from directrec.data.dataset import Dataset
    from directrec.text.encoder import item_embeddings

    item_embeddings(Dataset.from_store(db), db)  # cached in the store before the ranks start
    same = (f"arch={arch}", "codebook=8", "rq_epochs=40", "max_len=20", "dim=32", "heads=2")
    same += ("enc_layers=1", "dec_layers=1", "dropout=0", "batch_size=32", "lr=3e-3")
    same += ("epochs=3", "eval_every=3", "patience=1")
    a, b = one_and_two(db, tmp_path, "semantic-id", same)
    assert (a.codes == b.codes).all()
    # Weights agree to a few Adam steps (reduction order differs; key biases, to which
    # softmax is blind, drift most); what the models generate agrees closely.
    from directrec.data.dataset import Dataset
    from directrec.data.histories import Histories

    h = Histories.from_interactions(Dataset.from_store(db).interactions, range(60))
    ia, va = a.generate(h, beam=10)
    ib, vb = b.generate(h, beam=10)
    pairs = zip(ia.tolist(), ib.tolist(), strict=True)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in pairs])
    assert overlap >= 0.9, overlap
    assert (va[:, 0] - vb[:, 0]).abs().mean() <= 0.02


def test_llm_two_processes_match_one(db, tmp_path):
    """The LM backend (built-in GPT-2, LoRA) under DDP: the same global batch and seed give
    one process's per-epoch losses."""
    same = ("tiny_dim=32", "lora_r=4", "epochs=2", "samples_per_user=2", "batch_size=32")
    same += ("lr=1e-2", "eval_every=2", "patience=1", "beam=5", "prompt_items=4")
    a, _ = one_and_two(db, tmp_path, "llm", same)
    assert len(a.meta["train_log"]) == 2


def one_and_two(db, tmp_path, model: str, settings: tuple[str, ...], rel: float = 2e-3):
    """The same training with 1 and with 2 processes; both models, after checking that
    the 2-process run was one and that the per-epoch losses agree."""
    train(db, tmp_path / "one", 1, *settings, model=model)
    train(db, tmp_path / "two", 2, *settings, model=model)
    a, b = load_model(tmp_path / "one"), load_model(tmp_path / "two")
    assert b.meta["processes"] == 2 and "processes" not in a.meta
    la = [r["loss"] for r in a.meta["train_log"]]
    lb = [r["loss"] for r in b.meta["train_log"]]
    assert la == pytest.approx(lb, rel=rel)
    return a, b


def test_multvae_two_processes_train_together_and_cfgan_refuses(db, tmp_path):
    """Mult-VAE under DDP: each rank encodes its share of every batch of users, so the
    per-epoch losses follow one process's (its sampled latent noise differs per rank, so
    closely rather than exactly). CFGAN's alternating players train in one process and
    say so under torchrun instead of training each rank alone."""
    same = ("hidden=32", "latent=8", "dropout=0", "batch_size=64", "epochs=4", "threads=1")
    a, _ = one_and_two(db, tmp_path, "multvae", (*same, "eval_every=2", "patience=1"), rel=0.05)
    assert len(a.meta["train_log"]) >= 2
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "directrec", "train"]
    cmd += ["cfgan", "--db", str(db), "--out", str(tmp_path / "gan"), "--set", "epochs=1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode != 0 and "cfgan trains in one process" in res.stderr
    assert not (tmp_path / "gan").exists()
