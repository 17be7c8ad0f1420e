"""`directrec train --recipe <a cold-start recipe>` + `serve`: the cold gate is fitted by
the product (held-out items, validation cases) and the running service writes those
items, which the model never trained on, into users' lists."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from directrec.cli import app
from directrec.generate.stages import load_pipeline
from directrec.serve import registry
from tests.serve.conftest import Server

RECIPE = """
[recipe]
version = 1
name = "tiny-coldstart"
model = "semantic-id"
description = "a semantic-ID hybrid with a cold gate, sized for a test"

[settings]
arch = "causal"
codebook = 8
rq_epochs = 40
max_len = 20
dim = 32
heads = 2
enc_layers = 1
dec_layers = 1
epochs = 25
eval_every = 5
batch_size = 64
lr = 0.003
item_embedding = true
id_loss = 1.0

[stages.cold_gate]
holdout = 0.1
"""


def test_a_cold_start_recipe_trains_a_gate_that_the_service_applies(own_world, tmp_path):
    db, _ = own_world
    (tmp_path / "cold.toml").write_text(RECIPE)
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--recipe",
            str(tmp_path / "cold.toml"),
            "--db",
            str(db),
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "cold_gate:" in res.output
    model, stages = load_pipeline(tmp_path / "m")
    assert stages.cold_gate is not None, res.output
    fit = json.loads((tmp_path / "m" / "stages.json").read_text())["fits"]["cold_gate"]
    assert (
        fit["held_out_items"] == 12 and fit["valid_cold_recall"] > fit["valid_cold_recall_without"]
    )
    cold = {model.meta["item_ids"][i] for i in model.cold_items()}
    assert len(cold) == 12  # the held-out items: never trained on, cold to the model
    reg = tmp_path / "reg"
    registry.publish(tmp_path / "m", reg)
    s = Server(reg, db)
    try:
        users = [f"u{u}" for u in range(0, 120, 3)]
        lists = [
            [it["item_id"] for it in s.client.get(f"/v1/users/{u}/recommendations").json()["items"]]
            for u in users
        ]
    finally:
        s.stop()
    with_cold = [u for u, items in zip(users, lists, strict=True) if cold & set(items)]
    assert len(with_cold) >= len(users) // 3, (len(with_cold), len(users))
    # every listed item is one the user has not seen (on this planted set users have seen
    # most cold items of their own topic, so which cold items fit is checked on held-out
    # histories in tests/generate/test_coldstart.py)
    seen = {}
    for u in users:
        seen[u] = {i for i in inter_items(db, u)}
    assert all(not set(items) & seen[u] for u, items in zip(users, lists, strict=True))


def inter_items(db, user: str) -> list[str]:
    from directrec.data.store import open_store

    with open_store(db) as store:
        return store.histories([user]).get(user, [])
