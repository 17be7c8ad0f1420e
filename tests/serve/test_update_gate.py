"""The update gate: an update is published only if it validates no worse than the served
version on interactions the served version never saw; otherwise it is kept aside, with
the reason, and CURRENT does not move."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from directrec.cli import app
from directrec.data.dataset import Dataset
from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest, open_store
from directrec.models import create, load_model
from directrec.models.ease import EASE
from directrec.models.pop import MostPopular
from directrec.recipes import Recipe, RecipeError
from directrec.serve import registry
from directrec.serve.feedback import Event, FeedbackLog
from directrec.serve.update import update_model
from tests.conftest import planted_frames
from tests.models.settings import TEST_SETTINGS


@pytest.fixture()
def loop(tmp_path):
    """A store, a registry serving `name`, and 30 users' new in-cluster likes."""

    def make(name: str):
        inter, items = planted_frames(n_users=120)
        db = tmp_path / "store.duckdb"
        ingest(
            db,
            RawData(
                make_interactions(inter["user_id"], inter["item_id"], timestamp=inter["timestamp"]),
                items,
            ),
        )
        ds = Dataset.from_store(db)
        model = create(name).fit(ds.interactions)
        with open_store(db) as s:
            seq = s.last_seq()
        model.meta.update(
            user_ids=ds.users.ids.tolist(), item_ids=ds.items.ids.tolist(), store_seq=seq
        )
        reg = tmp_path / "registry"
        registry.publish(model.save(tmp_path / "m"), reg)
        fb = FeedbackLog(tmp_path / "fb.sqlite")
        # users u0..u29 like two more items of their own cluster (cluster = u % 6, 20 items)
        fb.add(
            [
                Event(f"u{u}", f"i{(u % 6) * 20 + j}", "like", 2e9 + 10 * u + j, key=f"{u}-{j}")
                for u in range(30)
                for j in (17, 19)
            ]
        )
        fb.close()
        return db, reg, tmp_path / "fb.sqlite"

    return make


def test_a_worse_update_is_kept_aside_and_current_stays(loop, monkeypatch):
    db, reg, fb = loop("ease")
    before = registry.current(reg)
    # Make the update deliberately worse: popularity in place of a refit EASE.
    monkeypatch.setattr(
        EASE,
        "update",
        lambda self, data, catalog=None, epochs=3, validator=None, **_: MostPopular().fit(data),
    )
    version, facts = update_model(reg, db, fb, reg, epochs=1, min_gate_users=10)
    assert version is None and not facts["published"]
    assert facts["gate_users"] == 30 and facts["gate"] == "compared"
    assert facts["valid_ndcg@10"] < facts["served_valid_ndcg@10"]
    assert "below the served version" in facts["reason"]
    assert registry.current(reg) == before
    assert Path(facts["kept_at"], "config.json").exists()  # kept aside, loadable


def test_a_better_update_is_published(loop, monkeypatch):
    db, reg, fb = loop("pop")
    monkeypatch.setattr(
        MostPopular,
        "update",
        lambda self, data, catalog=None, epochs=3, validator=None, **_: create("ease").fit(data),
    )
    version, facts = update_model(reg, db, fb, reg, epochs=1, min_gate_users=10)
    assert facts["published"] and version == registry.current(reg)
    assert facts["valid_ndcg@10"] > facts["served_valid_ndcg@10"]


def test_too_few_new_users_skips_the_gate_and_says_so(loop):
    db, reg, fb = loop("ease")
    version, facts = update_model(reg, db, fb, reg, epochs=1, min_gate_users=31)
    assert facts["published"] and version == registry.current(reg)
    assert facts["gate"].startswith("skipped: 30 users")


def test_an_update_the_canary_refuses_is_kept_aside(loop, monkeypatch):
    """Past the gate (skipped here), the canary still stands: an update whose weights
    turned NaN is not published, and says why."""
    db, reg, fb = loop("ease")
    before = registry.versions(reg), registry.current(reg)

    def broken(self, data, catalog=None, epochs=3, validator=None, **_):
        new = create("ease").fit(data)
        new.weights.fill_(float("nan"))
        return new

    monkeypatch.setattr(EASE, "update", broken)
    version, facts = update_model(reg, db, fb, reg, epochs=1, min_gate_users=10**6)
    assert version is None and not facts["published"] and facts["refused"] == "scores"
    assert "canary refused" in facts["reason"] and "NaN" in facts["reason"]
    assert (registry.versions(reg), registry.current(reg)) == before
    assert Path(facts["kept_at"], "config.json").exists()


def test_an_update_under_a_recipe_refits_with_its_settings_and_stores_it(loop, tmp_path):
    """`update --recipe`: a model that refits takes every setting of the recipe (here
    EASE's l2), and the published version stores the recipe it ran under."""
    db, reg, fb = loop("ease")
    served = registry.resolve(reg)[0]
    recipe = Recipe.plain("ease").with_settings({"l2": 7.0})
    version, facts = update_model(reg, db, fb, reg, epochs=1, min_gate_users=10**6, recipe=recipe)
    assert version == registry.current(reg)
    assert facts["published"]
    new = load_model(registry.resolve(reg)[0])
    assert new.config.l2 == 7.0 and load_model(served).config.l2 != 7.0
    assert new.meta["recipe"]["settings"]["l2"] == 7.0


def test_an_update_refuses_a_recipe_for_another_model_or_other_stages(loop):
    db, reg, fb = loop("ease")
    before = registry.versions(reg)
    with pytest.raises(RecipeError, match="is for itemknn"):
        update_model(reg, db, fb, reg, recipe=Recipe.plain("itemknn"))
    staged = Recipe(name="s", model="ease", stages={"prior_blend": {"users": 50}})
    with pytest.raises(RecipeError, match=r"names stages \[prior_blend\]"):
        update_model(reg, db, fb, reg, recipe=staged)
    assert registry.versions(reg) == before


def test_a_warm_start_takes_training_settings_and_refuses_network_ones(planted):
    data = planted.interactions
    model = create("sasrec-ce", TEST_SETTINGS["sasrec-ce"] | {"epochs": 2}).fit(data)
    new = model.update(data, epochs=1, settings={"lr": 0.01, "dim": model.config.dim})
    assert new.config.lr == 0.01 and new.config.epochs == 1
    with pytest.raises(ValueError, match=r"dim \(32 -> 64\)"):
        model.update(data, epochs=1, settings={"dim": 64})


def test_the_cli_update_takes_a_recipe_and_set(loop, tmp_path):
    db, reg, fb = loop("ease")
    r = tmp_path / "r.toml"
    r.write_text('[recipe]\nversion = 1\nname = "mine"\nmodel = "ease"\n\n[settings]\nl2 = 9.0\n')
    run = ["update", "--model", str(reg), "--db", str(db), "--feedback", str(fb)]
    res = CliRunner().invoke(
        app, [*run, "--recipe", str(r), "--set", "l2=11", "--min-gate-users", "1000"]
    )
    assert res.exit_code == 0, res.output
    assert load_model(registry.resolve(reg)[0]).config.l2 == 11.0
    res = CliRunner().invoke(app, [*run, "--set", "l2=oops"])
    assert res.exit_code == 2 and "l2" in res.output
    res = CliRunner().invoke(app, [*run, "--recipe", "sasrec-ce"])
    assert res.exit_code == 2 and "is for sasrec-ce" in res.output
