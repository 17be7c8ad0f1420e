"""The store round-trips data and is all-or-nothing on bad input: the same suite on both
backends (an embedded DuckDB file and a real PostgreSQL server)."""

from __future__ import annotations

import numpy as np
import pytest

from directrec.data import loaders
from directrec.data.dataset import Dataset
from directrec.data.schema import DataError
from directrec.data.store import describe, ingest, is_url, open_store


def test_ingest_and_read_back(store_at, ratings_csv, items_csv):
    counts = ingest(store_at, loaders.load("csv", ratings_csv, items_csv, columns="rating=rating"))
    assert counts == {"users": 3, "items": 4, "interactions": 9}
    with open_store(store_at) as s:
        inter, items, meta = s.interactions(), s.items(), s.meta()
        assert s.counts() == counts and s.last_seq() == 8
        assert s.user_ids() == ["u1", "u2", "u3"] and s.user_ids(limit=2) == ["u1", "u2"]
        assert s.histories(["u2", "nobody"]) == {"u2": ["a", "c", "d"]}
        assert s.history("u2") == ["a", "c", "d"] and s.history("nobody") is None
    assert inter["timestamp"].tolist()[:3] == [100, 200, 300]
    assert inter["rating"].tolist()[:3] == [5.0, 3.0, 4.0] and inter["line"].tolist()[0] == 0
    assert items.set_index("item_id").loc["a", "categories"] == ["x", "y"]
    assert items.set_index("item_id").loc["c", "text"] == ""
    assert len(meta["fingerprint"]) == 16
    ds = Dataset.from_store(store_at)
    assert ds.users.ids.tolist() == ["u1", "u2", "u3"] and ds.catalog.titles[0] == "Alpha"


def test_same_data_same_fingerprint_on_both_backends(tmp_path, pg_url, ratings_csv, items_csv):
    raw = loaders.load("csv", ratings_csv, items_csv)
    ingest(tmp_path / "s.duckdb", raw)
    ingest(pg_url, loaders.load("csv", ratings_csv, items_csv))
    with open_store(tmp_path / "s.duckdb") as d, open_store(pg_url) as p:
        assert d.meta()["fingerprint"] == p.meta()["fingerprint"] == p.fingerprint()
        a, b = d.interactions(), p.interactions()
        assert (
            a[["user_id", "item_id", "timestamp", "line"]]
            .astype(str)
            .equals(b[["user_id", "item_id", "timestamp", "line"]].astype(str))
        )


def test_failed_ingest_into_new_store_leaves_no_file(tmp_path, ratings_csv):
    db = tmp_path / "new.duckdb"
    raw = loaders.load("csv", ratings_csv)
    with pytest.raises(DataError, match="--strict needs an item catalogue"):
        ingest(db, raw, strict=True)
    assert not db.exists() and not list(tmp_path.glob("new.duckdb*"))


def test_failed_ingest_leaves_existing_store_unchanged(store_at, tmp_path, ratings_csv, items_csv):
    ingest(store_at, loaders.load("csv", ratings_csv, items_csv))
    with open_store(store_at) as s:
        before = s.interactions()
    bad = tmp_path / "more.csv"
    bad.write_text("user_id,item_id,timestamp\nu9,zzz,5\n")
    with pytest.raises(DataError) as e:
        ingest(
            store_at,
            loaders.load("csv", bad, items_csv),
            strict=True,
            append=True,
            interactions_file=str(bad),
        )
    assert e.value.line == 2 and e.value.field == "item_id" and "zzz" in str(e.value)
    with open_store(store_at) as s:
        assert s.interactions().astype(str).equals(before.astype(str))


def test_failure_inside_the_transaction_rolls_back(pg_url, ratings_csv, items_csv, monkeypatch):
    """A database error half-way (after COPY) leaves the PostgreSQL store as it was."""
    from directrec.data import pgstore

    ingest(pg_url, loaders.load("csv", ratings_csv, items_csv))
    monkeypatch.setattr(pgstore, "INDEX", "CREATE INDEX broken ON no_such_table (x)")
    with pytest.raises(DataError, match="nothing was written"):
        ingest(pg_url, loaders.load("csv", ratings_csv))  # replace mode: TRUNCATE, COPY, …
    with open_store(pg_url) as s:
        assert s.counts() == {"users": 3, "items": 4, "interactions": 9}
        assert s.items().set_index("item_id").loc["a", "title"] == "Alpha"


def test_append_and_items_added_for_unknown_ids(store_at, ratings_csv):
    ingest(store_at, loaders.load("csv", ratings_csv))
    more = loaders.load("csv", ratings_csv)
    more.interactions = more.interactions.iloc[:1].assign(user_id="u4", item_id="e")
    counts = ingest(store_at, more, append=True)
    assert counts == {"users": 4, "items": 5, "interactions": 10}
    with open_store(store_at) as s:
        assert s.last_seq() == 9 and s.histories(["u4"]) == {"u4": ["e"]}
        assert s.meta()["fingerprint"] == s.fingerprint()


def test_duplicate_catalogue_ids_rejected(store_at, tmp_path, ratings_csv):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\na,A\na,A again\n")
    with pytest.raises(DataError, match="appears twice"):
        ingest(store_at, loaders.load("csv", ratings_csv, items))


def test_embedding_cache(store_at, ratings_csv):
    ingest(store_at, loaders.load("csv", ratings_csv))
    vecs = np.arange(8, dtype=np.float32).reshape(2, 4)
    with open_store(store_at, read_only=False) as s:
        s.put_embeddings("m", ["a", "b"], vecs)
        assert np.array_equal(s.embeddings("m", ["b", "a"]), vecs[::-1])
        assert s.embeddings("m", ["a", "c"]) is None


def test_forget_leaves_nothing_of_the_user(store_at, ratings_csv, items_csv):
    ingest(store_at, loaders.load("csv", ratings_csv, items_csv))
    with open_store(store_at, read_only=False) as s:
        before = s.meta()["fingerprint"]
        deleted = s.forget("u2")
        assert deleted["interactions"] == 3 and deleted["users"] == 1
        assert set(s.user_rows("u2").values()) == {0}
        assert s.histories(["u2"]) == {} and "u2" not in s.user_ids()
        assert s.meta()["fingerprint"] == s.fingerprint() != before
        assert s.meta()["forget_epoch"] == "1"
        # Nothing else of u2 anywhere: every text column of every table.
        for table, cols in (
            ("interactions", ("user_id", "item_id", "event")),
            ("users", ("user_id",)),
            ("meta", ("key", "value")),
        ):
            for col in cols:
                hits = s._rows(f"SELECT count(*) FROM {table} WHERE {col} = ?", ["u2"])
                assert hits[0][0] == 0, (table, col)
        assert s.forget("u2") == {t: 0 for t in s.USER_TABLES}  # idempotent: nothing left,
        assert s.meta()["forget_epoch"] == "1"  # so nothing changed


def test_missing_store_is_a_clear_error(tmp_path, pg_url):
    with pytest.raises(DataError, match="store not found"):
        open_store(tmp_path / "nope.duckdb")
    with pytest.raises(DataError, match="no directrec store in this database"):
        open_store(pg_url)
    down = "postgresql://someone:secret@127.0.0.1:1/x"
    with pytest.raises(DataError, match="cannot connect") as e:
        open_store(down)
    assert "secret" not in str(e.value) and is_url(down) and "***" in describe(down)
