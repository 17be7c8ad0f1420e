"""The store round-trips data and is all-or-nothing on bad input."""

from __future__ import annotations

import pytest

from directrec.data import loaders
from directrec.data.dataset import Dataset
from directrec.data.schema import DataError
from directrec.data.store import Store, ingest


def test_ingest_and_read_back(tmp_path, ratings_csv, items_csv):
    db = tmp_path / "s.duckdb"
    counts = ingest(db, loaders.load("csv", ratings_csv, items_csv, columns="rating=rating"))
    assert counts == {"users": 3, "items": 4, "interactions": 9}
    with Store(db) as s:
        inter, items, meta = s.interactions(), s.items(), s.meta()
    assert inter["timestamp"].tolist()[:3] == [100, 200, 300]
    assert items.set_index("item_id").loc["a", "categories"] == ["x", "y"]
    assert len(meta["fingerprint"]) == 16
    ds = Dataset.from_store(db)
    assert ds.users.ids.tolist() == ["u1", "u2", "u3"] and ds.catalog.titles[0] == "Alpha"


def test_failed_ingest_into_new_store_leaves_no_file(tmp_path, ratings_csv):
    db = tmp_path / "new.duckdb"
    raw = loaders.load("csv", ratings_csv)
    with pytest.raises(DataError, match="--strict needs an item catalogue"):
        ingest(db, raw, strict=True)
    assert not db.exists() and not list(tmp_path.glob("new.duckdb*"))


def test_failed_ingest_leaves_existing_store_unchanged(tmp_path, ratings_csv, items_csv):
    db = tmp_path / "s.duckdb"
    ingest(db, loaders.load("csv", ratings_csv, items_csv))
    before = Store(db).interactions()
    bad = tmp_path / "more.csv"
    bad.write_text("user_id,item_id,timestamp\nu9,zzz,5\n")
    with pytest.raises(DataError) as e:
        ingest(
            db,
            loaders.load("csv", bad, items_csv),
            strict=True,
            append=True,
            interactions_file=str(bad),
        )
    assert e.value.line == 2 and e.value.field == "item_id" and "zzz" in str(e.value)
    with Store(db) as s:
        assert s.interactions().equals(before)


def test_append_and_items_added_for_unknown_ids(tmp_path, ratings_csv):
    db = tmp_path / "s.duckdb"
    ingest(db, loaders.load("csv", ratings_csv))
    more = tmp_path / "more.csv"
    more.write_text("user_id,item_id,timestamp\nu4,e,999\n")
    counts = ingest(db, loaders.load("csv", more), append=True)
    assert counts == {"users": 4, "items": 5, "interactions": 10}


def test_duplicate_catalogue_ids_rejected(tmp_path, ratings_csv):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\na,A\na,A again\n")
    with pytest.raises(DataError, match="appears twice"):
        ingest(tmp_path / "s.duckdb", loaders.load("csv", ratings_csv, items))


def test_embedding_cache(tmp_path, ratings_csv):
    import numpy as np

    db = tmp_path / "s.duckdb"
    ingest(db, loaders.load("csv", ratings_csv))
    vecs = np.arange(8, dtype=np.float32).reshape(2, 4)
    with Store(db, read_only=False) as s:
        s.put_embeddings("m", ["a", "b"], vecs)
        assert np.array_equal(s.embeddings("m", ["b", "a"]), vecs[::-1])
        assert s.embeddings("m", ["a", "c"]) is None


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="store not found"):
        Store(tmp_path / "nope.duckdb")
