"""The PostgreSQL store: the same tables and reads as the DuckDB file, for stores that
several processes or machines share (service workers, training ranks, the feedback log).

Ingest is one transaction with COPY for the bulk rows; readers see the old data until it
commits. Large reads come back through COPY TO as CSV parsed by pyarrow, not row by row.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

from directrec.data.schema import DataError, RawData
from directrec.data.storebase import (
    ADD_IMAGE_COLUMN,
    ITEM_INSERT,
    TABLE,
    StoreBase,
    describe,
    fingerprint_of,
    hashes_arrow,
    image_column,
    interactions_arrow,
    schema,
)

# Tables first, then every index but the interactions' (built after a bulk COPY: faster).
SCHEMA = schema("postgres", indexes=False) + [
    stmt
    for t in TABLE.values()
    if t.name != "interactions"
    for stmt in t.render_indexes("postgres")
]
INDEX = TABLE["interactions"].render_indexes("postgres")[0]
# Column types COPY TO can hand to pyarrow as CSV (anything else is read row by row).
_ARROW = {25: pa.string(), 1043: pa.string(), 20: pa.int64(), 23: pa.int64(), 701: pa.float64()}
_COPY_ROWS = 1 << 20  # interactions per COPY chunk on ingest: bounded memory


def connect(url: str) -> psycopg.Connection:
    """An autocommit connection (transactions are explicit), or a DataError naming the
    store without its password."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        raise DataError(f"cannot connect to the PostgreSQL store ({e})", file=describe(url)) from e


def _sql(sql: str) -> str:
    return sql.replace("?", "%s")


class PgStore(StoreBase):
    """A PostgreSQL database holding directrec's tables. Safe to share between threads
    (psycopg serialises a connection's use) and between processes."""

    IN_LIST = "= ANY(?)"
    DIALECT = "postgres"
    USER_TABLES = ("interactions", "users", "feedback_events")

    def __init__(self, url: str) -> None:
        self.location = describe(url)
        self.con = connect(url)
        found = self.con.execute("SELECT to_regclass('interactions')").fetchone()
        if found is None or found[0] is None:
            self.con.close()
            raise DataError(
                "no directrec store in this database; create it with `directrec ingest`",
                file=self.location,
            )

    def close(self) -> None:
        self.con.close()

    def _rows(self, sql: str, params: list | None = None) -> list[tuple]:
        cur = self.con.execute(_sql(sql), params)
        return cur.fetchall() if cur.description else []

    def _exec(self, sql: str, params: list | None = None) -> int:
        return self.con.execute(_sql(sql), params).rowcount

    def _columns(self, table: str) -> set[str]:
        rows = self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
        return {str(r[0]) for r in rows}

    def _has(self, table: str) -> bool:
        found = self.con.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        return found is not None and found[0] is not None

    def _scrub(self, tables: tuple[str, ...]) -> None:
        """VACUUM FULL writes each table (and its indexes) into new files and truncates
        the old ones at once: the deleted rows' bytes leave the relation files. ANALYZE
        replaces statistics that may have sampled the id; VACUUM FULL pg_statistic then
        drops the old statistics rows (PostgreSQL skips it, with a warning, for a role
        that does not own the catalogue). The server's WAL, archives and replicas are
        outside a table's reach (see docs/data.md)."""
        for t in tables:
            self.con.execute(f"VACUUM (FULL, ANALYZE) {t}")
        self.con.execute("VACUUM FULL pg_statistic")

    def _frame(self, sql: str, params: list | None = None) -> pd.DataFrame:
        cur = self.con.execute(_sql(sql), params) if params else None
        if cur is not None:  # small, parameterised reads: row by row
            names = [d.name for d in cur.description]
            rows = cur.fetchall()
            df = pd.DataFrame.from_records(rows, columns=names)
            for d in cur.description:
                if d.type_code in (20, 23, 701) and df[d.name].dtype == object:
                    df[d.name] = pd.to_numeric(df[d.name])
            return df
        desc = self.con.execute(f"SELECT * FROM ({sql}) q LIMIT 0").description
        types = {d.name: _ARROW.get(d.type_code) for d in desc}
        if any(t is None for t in types.values()):
            cur = self.con.execute(sql)
            return pd.DataFrame.from_records(cur.fetchall(), columns=list(types))
        buf = io.BytesIO()
        with self.con.cursor().copy(f"COPY ({sql}) TO STDOUT (FORMAT csv, HEADER)") as cp:
            for chunk in cp:
                buf.write(chunk)
        buf.seek(0)
        table = pacsv.read_csv(
            buf,
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )
        return table.to_pandas()

    def put_embeddings(self, model: str, item_ids: list[str], vectors: np.ndarray) -> None:
        with self.transaction():
            self._exec("DELETE FROM item_embeddings WHERE model = ?", [model])
            with self.con.cursor().copy(
                "COPY item_embeddings (model, item_id, vector) FROM STDIN"
            ) as cp:
                for i, v in zip(item_ids, vectors, strict=True):
                    cp.write_row((model, i, v.astype(np.float32).tobytes()))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.con.transaction():
            yield


def ingest_pg(
    url: str, raw: RawData, *, append: bool = False, options: dict | None = None
) -> dict[str, int]:
    """Write validated `raw` into the PostgreSQL store at `url` in one transaction (COPY
    for the interactions); the store is unchanged if anything fails."""
    inter, items = raw.interactions, raw.items
    con = connect(url)
    try:
        with con.transaction():
            for stmt in SCHEMA:
                con.execute(stmt)
            con.execute(ADD_IMAGE_COLUMN.format(text="TEXT"))
            if not append:
                con.execute("DROP INDEX IF EXISTS interactions_user")  # rebuilt after COPY
                con.execute(
                    "TRUNCATE interactions, items, users, meta, item_embeddings, stream_keys"
                )
            start = con.execute("SELECT coalesce(max(seq) + 1, 0) FROM interactions").fetchone()[0]
            frame = interactions_arrow(inter, int(start))
            with con.cursor().copy(
                "COPY interactions (seq, user_id, item_id, ts, rating, event) "
                "FROM STDIN (FORMAT csv)"
            ) as cp:
                for batch in frame.to_batches(_COPY_ROWS):
                    buf = io.BytesIO()
                    pacsv.write_csv(
                        batch, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed")
                    )
                    cp.write(buf.getvalue())
            con.execute(INDEX)
            # A user ingested again is in the data again: no longer forgotten.
            if con.execute("SELECT count(*) FROM forgotten").fetchone()[0]:
                hashes = hashes_arrow(frame["user_id"].to_numpy(zero_copy_only=False))
                con.execute(
                    "DELETE FROM forgotten WHERE user_hash = ANY(%s)",
                    (hashes["user_hash"].to_pylist(),),
                )
            if items is not None and not items.empty:
                con.execute(
                    "CREATE TEMP TABLE items_in (item_id TEXT, title TEXT, text TEXT, "
                    "categories TEXT[], image TEXT) ON COMMIT DROP"
                )
                with con.cursor().copy("COPY items_in FROM STDIN") as cp:
                    for row in zip(
                        items["item_id"].astype(str),
                        items["title"].fillna("").astype(str),
                        items["text"].fillna("").astype(str),
                        items["categories"],
                        image_column(items),
                        strict=True,
                    ):
                        cats = list(row[3]) if row[3] is not None else []
                        cp.write_row((*row[:3], cats, row[4]))
                # Catalogue rows replace earlier rows of the same id (an update of the text).
                con.execute(
                    f"{ITEM_INSERT} ON CONFLICT (item_id) DO UPDATE "
                    "SET title = EXCLUDED.title, text = EXCLUDED.text, "
                    "categories = EXCLUDED.categories, image = EXCLUDED.image"
                )
                con.execute(
                    "DELETE FROM item_embeddings WHERE item_id IN (SELECT item_id FROM items_in)"
                )
            con.execute(
                "INSERT INTO items (item_id, title, text, categories) "
                "SELECT DISTINCT item_id, '', '', '{}'::TEXT[] "
                "FROM interactions ON CONFLICT (item_id) DO NOTHING"
            )
            con.execute(
                "INSERT INTO users SELECT DISTINCT user_id FROM interactions "
                "ON CONFLICT (user_id) DO NOTHING"
            )
            if append:
                with PgStoreOn(con) as store:
                    fp = store.fingerprint()
            else:
                fp = fingerprint_of(
                    {
                        "user_id": frame["user_id"].to_numpy(zero_copy_only=False),
                        "item_id": frame["item_id"].to_numpy(zero_copy_only=False),
                        "ts": frame["ts"].fill_null(-1).to_numpy(),
                        "rating": frame["rating"].fill_null(-1.0).to_numpy(),
                    }
                )
            meta = {"source": raw.source, "fingerprint": fp, "options": json.dumps(options or {})}
            for k, v in meta.items():
                con.execute(
                    "INSERT INTO meta VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (k, v),
                )
            u, i, n = con.execute(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items), "
                "(SELECT count(*) FROM interactions)"
            ).fetchone()
    except psycopg.Error as e:
        raise DataError(f"ingest failed, nothing was written ({e})", file=describe(url)) from e
    finally:
        con.close()
    return {"users": int(u), "items": int(i), "interactions": int(n)}


class PgStoreOn(PgStore):
    """A PgStore over a connection someone else owns (inside their transaction)."""

    def __init__(self, con: psycopg.Connection) -> None:
        self.location, self.con = "(transaction)", con

    def close(self) -> None:
        pass
