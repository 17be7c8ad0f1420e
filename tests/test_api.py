"""The Python API: the docs example runs as written, and each function does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import directrec as dr
from directrec.data.schema import DataError
from tests.conftest import planted_frames

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def shop(tmp_path: Path) -> None:
    """events.csv and catalogue.csv in the shape the docs example reads, planted signal."""
    inter, items = planted_frames(n_users=120)
    events = pd.DataFrame(
        {
            "customer_id": "c" + inter["user_id"].str[1:],
            "sku": inter["item_id"],
            "ts": inter["timestamp"],
        }
    )
    events.to_csv(tmp_path / "events.csv", index=False)
    items.assign(categories=items["categories"].map("|".join)).rename(
        columns={"item_id": "sku", "title": "name", "categories": "tags"}
    ).to_csv(tmp_path / "catalogue.csv", index=False)


def test_the_docs_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    shop(tmp_path)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    lists, again, trained = scope["lists"], scope["again"], scope["trained"]
    assert list(lists["user_id"].unique()) == ["c1", "c2"] and len(lists) == 10
    assert lists["reason"].str.len().gt(0).all()
    # the model learned: users love one topic (item n belongs to topic n // 20) and their
    # lists are mostly of it, far from popularity's mix
    topic = lists["item_id"].str[1:].astype(int) // 20
    assert (topic == lists["user_id"].str[1:].astype(int) % 6).mean() >= 0.6
    ndcg = float(capsys.readouterr().out.splitlines()[0])
    assert 0.1 < ndcg <= 1.0
    # saved and loaded: the same lists
    data = scope["data"]
    pd.testing.assert_frame_equal(
        again.recommend(data, ["c1", "c2"], k=5), trained.recommend(data, ["c1", "c2"], k=5)
    )
    assert again.recipe["recipe"]["name"] == "sasrec-ce"


def test_a_mapped_column_that_is_missing_is_named(tmp_path):
    shop(tmp_path)
    events = pd.read_csv(tmp_path / "events.csv")
    with pytest.raises(DataError, match=r"column 'when' \(mapped as time\) not found.*'ts'"):
        dr.dataset(events, columns={"user": "customer_id", "item": "sku", "time": "when"})
    with pytest.raises(ValueError, match="unknown key"):
        dr.dataset(events, columns={"user": "customer_id", "item": "sku", "clock": "ts"})
    bad = events.assign(ts=events["ts"].astype(object))
    bad.loc[3, "ts"] = "n/a"
    with pytest.raises(DataError, match="'ts'"):
        dr.dataset(bad, columns={"user": "customer_id", "item": "sku", "time": "ts"})


def test_evaluate_refuses_a_model_that_saw_the_test_items(tmp_path):
    shop(tmp_path)
    events = pd.read_csv(tmp_path / "events.csv")
    data = dr.dataset(events, columns={"user": "customer_id", "item": "sku", "time": "ts"})
    trained = dr.train(data, "ease")
    with pytest.raises(ValueError, match="holdout='loo'"):
        trained.evaluate(data)
    honest = dr.train(data, "ease", holdout="loo")
    figures = honest.evaluate(data)
    pop = dr.train(data, "pop", holdout="loo").evaluate(data)
    assert figures["ndcg@10"] > 2 * pop["ndcg@10"]
    unknown = honest.recommend(data, ["nobody"], k=3)
    assert len(unknown) == 3 and np.isfinite(unknown["score"]).all()
