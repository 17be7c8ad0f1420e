"""Shared fixtures: small generated data with a planted signal, and tiny input files."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from directrec.data.dataset import Dataset

TOPICS = [
    "space galaxy rocket alien astronaut planet",
    "cooking recipe kitchen chef baking dinner",
    "football soccer match goal stadium league",
    "romance love wedding heart couple kiss",
    "horror ghost haunted scary monster zombie",
    "finance money stock market investing bank",
]


def planted_frames(
    n_users: int = 300,
    n_clusters: int = 6,
    items_per_cluster: int = 20,
    history: tuple[int, int] = (12, 24),
    in_cluster: float = 0.85,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users each love one cluster of items: most of their history (and their held-out
    items) come from it, the rest from a Zipf-popular global pool. A model that learns
    co-occurrence beats popularity by far; popularity alone cannot."""
    rng = np.random.default_rng(seed)
    n_items = n_clusters * items_per_cluster
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop = pop[rng.permutation(n_items)]
    pop /= pop.sum()
    rows = []
    for u in range(n_users):
        c = u % n_clusters
        own = np.arange(c * items_per_cluster, (c + 1) * items_per_cluster)
        n = int(rng.integers(*history))
        picks: list[int] = []
        while len(picks) < n:
            i = (
                int(rng.choice(own))
                if rng.random() < in_cluster
                else int(rng.choice(n_items, p=pop))
            )
            if i not in picks:
                picks.append(i)
        for t, i in enumerate(picks):
            rating = 5.0 if i in own else float(rng.integers(1, 4))
            rows.append((f"u{u}", f"i{i}", 1_000_000 + u * 1000 + t, rating))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    inter["event"] = None
    inter["line"] = np.arange(1, len(inter) + 1)
    words = [t.split() for t in TOPICS]
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [
                " ".join(rng.choice(words[(i // items_per_cluster) % len(words)], 3, replace=False))
                for i in range(n_items)
            ],
            "text": "",
            "categories": [[f"topic{i // items_per_cluster}"] for i in range(n_items)],
        }
    )
    return inter, items


@pytest.fixture(scope="session")
def planted() -> Dataset:
    inter, items = planted_frames()
    return Dataset.from_frames(inter, items)


@pytest.fixture(scope="session")
def planted_embedded(planted: Dataset) -> Dataset:
    from directrec.text.encoder import encode

    docs = [planted.catalog.document(i) for i in range(planted.interactions.n_items)]
    planted.catalog.embeddings = encode(docs)
    return planted


@pytest.fixture()
def ratings_csv(tmp_path):
    p = tmp_path / "ratings.csv"
    p.write_text(
        "user_id,item_id,timestamp,rating\n"
        "u1,a,100,5\nu1,b,200,3\nu1,c,300,4\n"
        "u2,a,150,2\nu2,c,250,5\nu2,d,350,1\n"
        "u3,b,120,4\nu3,d,220,5\nu3,a,320,3\n"
    )
    return p


@pytest.fixture()
def items_csv(tmp_path):
    p = tmp_path / "items.csv"
    p.write_text(
        "item_id,title,text,categories\n"
        "a,Alpha,first item,x|y\nb,Beta,second item,y\nc,Gamma,,z\nd,Delta,fourth,x\n"
    )
    return p


# --------------------------------------------------------------------------- PostgreSQL
# One real server per test session (Debian's postgresql, started by the test itself: initdb
# into a temp dir, pg_ctl on a free loopback port); every test gets its own database.
_PG_COUNTER = iter(range(1_000_000))


@pytest.fixture(scope="session")
def postgres_server():
    from directrec.data.pglocal import LocalPostgres, binaries

    if binaries() is None:  # `make setup` installs it; a bare machine says why it skipped
        pytest.skip("PostgreSQL is not installed (make setup installs Debian's postgresql)")
    with LocalPostgres(fsync=False) as pg:
        yield pg


@pytest.fixture()
def pg_url(postgres_server):
    """A fresh, empty database on the session's server; dropped afterwards."""
    import psycopg

    name = f"t{os.getpid()}_{next(_PG_COUNTER)}"
    admin = postgres_server.url
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    yield admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["duckdb", "postgres"])
def store_at(request, tmp_path):
    """Where a store goes, on each backend: a DuckDB file or a PostgreSQL URL."""
    if request.param == "duckdb":
        return tmp_path / "s.duckdb"
    return request.getfixturevalue("pg_url")


# --------------------------------------------------------------------------- Redis
# One real server per test session (Debian's redis-server on a free loopback port, nothing
# persisted); every test gets its own stream name.
_STREAMS = iter(range(1_000_000))


@pytest.fixture(scope="session")
def redis_server():
    from directrec.data.redislocal import LocalRedis, installed

    if not installed():  # `make setup` installs it; a bare machine says why it skipped
        pytest.skip("redis-server is not installed (make setup installs Debian's redis-server)")
    with LocalRedis() as r:
        yield r


@pytest.fixture()
def r(redis_server):
    """A client of the session's Redis server."""
    import redis

    client = redis.Redis(port=redis_server.port)
    yield client
    client.close()


@pytest.fixture()
def stream_name():
    return f"ev{os.getpid()}-{next(_STREAMS)}"
