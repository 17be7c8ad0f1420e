"""The update gate: an update is published only if it validates no worse than the served
version on interactions the served version never saw; otherwise it is kept aside, with
the reason, and CURRENT does not move."""

from __future__ import annotations

from pathlib import Path

import pytest

from directrec.data.dataset import Dataset
from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest, open_store
from directrec.models import create
from directrec.models.ease import EASE
from directrec.models.pop import MostPopular
from directrec.serve import registry
from directrec.serve.feedback import Event, FeedbackLog
from directrec.serve.update import update_model
from tests.conftest import planted_frames


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
        lambda self, data, catalog=None, epochs=3, validator=None: MostPopular().fit(data),
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
        lambda self, data, catalog=None, epochs=3, validator=None: create("ease").fit(data),
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

    def broken(self, data, catalog=None, epochs=3, validator=None):
        new = create("ease").fit(data)
        new.weights.fill_(float("nan"))
        return new

    monkeypatch.setattr(EASE, "update", broken)
    version, facts = update_model(reg, db, fb, reg, epochs=1, min_gate_users=10**6)
    assert version is None and not facts["published"] and facts["refused"] == "scores"
    assert "canary refused" in facts["reason"] and "NaN" in facts["reason"]
    assert (registry.versions(reg), registry.current(reg)) == before
    assert Path(facts["kept_at"], "config.json").exists()
