"""Finding one's way around the CLI: `models`, the settings `train MODEL --help` lists,
examples printed whole, and `tune` (validation only) writing a recipe `train` takes."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
from typer.testing import CliRunner

from directrec.cli import app
from directrec.models import MODELS
from directrec.recipes import Recipe
from tests.conftest import planted_frames

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def settings_of(text: str) -> dict:
    """Every setting of a recipe file's text, whichever part's table holds it."""
    return Recipe.from_text(text, "recipe").settings


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    inter, _ = planted_frames(n_users=90)
    inter[["user_id", "item_id", "timestamp"]].to_csv(d / "log.csv", index=False)
    db = d / "s.duckdb"
    res = run("ingest", "--format", "csv", "--interactions", d / "log.csv", "--db", db)
    assert res.exit_code == 0, res.output
    return d, db


# --------------------------------------------------------------------------- models / help
def test_models_lists_every_model_on_one_line():
    res = run("models")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for name, cls in MODELS.items():
        assert cls.summary, f"{name} has no summary"
        hits = [line for line in lines if line.split()[:1] == [name]]
        assert len(hits) == 1, (name, hits)
        assert cls.summary in hits[0]  # the whole line, not wrapped at 80 columns


def test_every_setting_of_every_model_has_a_meaning():
    for name, cls in MODELS.items():
        meaning = cls.setting_help()
        missing = [s for s in cls.setting_fields() if not meaning.get(s)]
        assert not missing, f"{name}: settings without a meaning: {missing}"
    # a subclass that only changes a default keeps the base class's meaning
    assert (
        MODELS["semantic-id"].setting_help()["epochs"]
        == (MODELS["sasrec"].setting_help()["epochs"])
    )


def test_train_model_help_lists_its_settings_with_defaults_and_meaning():
    res = run("train", "itemknn", "--help")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "itemknn settings" in text
    for name, default in (("neighbours", "100"), ("shrink", "10")):
        row = next(line for line in res.output.splitlines() if f" {name} " in line)
        assert row.split("│")[1].strip() == "model" and default in row.split("│")[4], row
    assert "shrinkage" in text
    # a generator's settings come grouped by part, the network's first
    res = run("models", "sasrec-ce")
    parts = [line.split("│")[1].strip() for line in res.output.splitlines() if "│" in line]
    parts = [p for p in parts if p]
    assert parts[0] == "network" and {"network", "training", "run"} <= set(parts), parts
    assert parts == sorted(parts, key=["network", "training", "run"].index), parts
    # the default shown is what `train MODEL` runs: the shipped recipe's, over the model's
    res = run("models", "sasrec-ce")
    assert res.exit_code == 0, res.output
    assert "defaults: the recipe 'sasrec-ce'" in " ".join(res.output.split())
    # a recipe names its model
    res = run("train", "--recipe", "fast-cpu", "--help")
    text = " ".join(res.output.split())
    assert "sasrec-ce settings" in text and "the recipe 'fast-cpu'" in text
    # without a model, help says where the settings are
    res = run("train", "--help")
    assert "directrec train MODEL --help" in " ".join(res.output.split())
    res = run("models", "nosuch")
    assert res.exit_code == 2 and "unknown model" in res.output


def test_help_examples_are_not_cut_at_80_columns():
    res = run("tune", "--help")
    assert res.exit_code == 0, res.output
    long = [line for line in res.output.splitlines() if line.strip().startswith("directrec tune")]
    assert long and max(map(len, long)) > 80
    assert (
        "directrec tune itemknn --db shop.duckdb --trials 50 --space knn-space.toml --out knn.toml"
        in res.output
    )
    # the command list gives each command's first paragraph as prose, not its hard breaks
    import click
    import typer

    group = typer.main.get_command(app)
    short = group.get_command(click.Context(group), "benchmark").short_help
    assert short.startswith("Fit and evaluate models on one split;") and "\n" not in short
    assert "With --recipe, the recipe's protocol" in short


# --------------------------------------------------------------------------- tune
def test_tune_writes_a_recipe_that_train_and_recipes_show_take(store):
    d, db = store
    best = d / "best.toml"
    res = run("tune", "itemknn", "--db", db, "--trials", 3, "--out", best, "--seed", 7)
    assert res.exit_code == 0, res.output
    assert res.output.count("trial ") >= 3  # a line per trial off a terminal
    doc = tomllib.loads(best.read_text())
    assert doc["recipe"]["model"] == "itemknn" and doc["recipe"]["name"] == "best"
    assert set(doc["model"]) == {"neighbours", "shrink"} and set(doc["training"]) == {"seed"}
    doc["settings"] = settings_of(best.read_text())
    assert doc["settings"]["seed"] == 7  # the trials' seed: train reproduces the best trial
    assert 10 <= doc["settings"]["neighbours"] <= 1000
    described = doc["recipe"]["description"]
    assert "3 Optuna trials" in described and "NDCG@10" in described
    assert "validation" in described and "test items" in described
    assert "measured" not in doc["recipe"]

    shown = run("recipes", "show", best)
    assert shown.exit_code == 0, shown.output
    assert settings_of(shown.output) == doc["settings"]
    res = run("train", "--recipe", best, "--db", db, "--out", d / "m")
    assert res.exit_code == 0, res.output
    saved = json.loads((d / "m" / "config.json").read_text())
    assert saved["config"]["neighbours"] == doc["settings"]["neighbours"]
    assert saved["config"]["shrink"] == doc["settings"]["shrink"]

    # seeded: the same command finds the same settings
    again = d / "again.toml"
    res = run("tune", "itemknn", "--db", db, "--trials", 3, "--out", again, "--seed", 7)
    assert res.exit_code == 0, res.output
    assert settings_of(again.read_text()) == doc["settings"]


def test_tune_takes_a_search_space_file_and_fixed_settings(store):
    d, db = store
    space = d / "space.toml"
    space.write_text("[space]\nl2 = [10.0, 100.0, 1000.0]\n")
    out = d / "ease.toml"
    res = run("tune", "ease", "--db", db, "--trials", 3, "--space", space, "--out", out)
    assert res.exit_code == 0, res.output
    assert settings_of(out.read_text())["l2"] in (10.0, 100.0, 1000.0)

    space.write_text("[space]\nneighbours = {low = 10, high = 1000}\n")
    res = run("tune", "ease", "--db", db, "--trials", 3, "--space", space, "--out", d / "x.toml")
    assert res.exit_code == 2 and "neighbours" in res.output and "space.toml" in res.output
    assert not (d / "x.toml").exists()
    space.write_text("[space]\nl2 = {low = 0.0, high = 10.0, log = true}\n")
    res = run("tune", "ease", "--db", db, "--trials", 3, "--space", space, "--out", d / "x.toml")
    assert res.exit_code == 2 and "log range" in res.output
    res = run("tune", "pop", "--db", db, "--trials", 3, "--out", d / "x.toml")
    assert res.exit_code == 2 and "no settings to tune" in res.output
    assert not (d / "x.toml").exists()

    # --set fixes a setting for every trial (it leaves the search) and the recipe keeps it
    res = run(
        "tune", "itemknn", "--db", db, "--trials", 2, "--set", "shrink=3", "--out", d / "k.toml"
    )
    assert res.exit_code == 0, res.output
    assert "shrink:" not in res.output  # not among the searched settings printed first
    settings = settings_of((d / "k.toml").read_text())
    assert settings["shrink"] == 3.0 and "neighbours" in settings


def test_tune_never_touches_the_test_stage(store, monkeypatch):
    """Every fit sees only the training part, every score the validation targets, and no
    split is ever asked for its test stage."""
    from directrec.data import split as split_mod
    from directrec.data.dataset import Dataset
    from directrec.evaluate import tune as tuning
    from directrec.models.base import Recommender

    _, db = store
    ds = Dataset.from_store(db)
    reference = split_mod.leave_one_out(ds.interactions)
    stages: list[str] = []
    fitted: list[int] = []
    scored: list[tuple[np.ndarray, np.ndarray]] = []

    real_before = split_mod.Split._before
    real_fit = Recommender.fit
    real_evaluate = tuning.evaluate

    def before(self, name):
        stages.append(name)
        return real_before(self, name)

    def fit(self, data, catalog=None, validator=None):
        fitted.append(len(data))
        return real_fit(self, data, catalog, validator)

    def evaluate(model, inputs, targets, ks, **kw):
        scored.append((targets.users.copy(), targets.items.copy()))
        return real_evaluate(model, inputs, targets, ks, **kw)

    monkeypatch.setattr(split_mod.Split, "_before", before)
    monkeypatch.setattr(Recommender, "fit", fit)
    monkeypatch.setattr(tuning, "evaluate", evaluate)
    result = tuning.tune("ease", ds, tuning.default_space("ease"), trials=3)
    assert len(result.trials) == 3 and result.value > 0
    assert stages and set(stages) == {"valid"}
    assert fitted == [len(reference.train)] * 3
    assert len(scored) == 3
    for users, items in scored:
        np.testing.assert_array_equal(users, reference.valid_targets.users)
        np.testing.assert_array_equal(items, reference.valid_targets.items)
        assert not np.array_equal(items, reference.test_targets.items)
