"""The service's endpoints against a real server on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import sqlite3

import httpx
import pytest

from directrec.serve.feedback import default_path
from tests.serve.conftest import TOKEN, Server

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def topic(item_id: str) -> int:
    return int(item_id[1:]) // 20  # planted data: 20 items per topic cluster


def test_health_ready_metrics_and_version_header(server):
    c = server.client
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"].startswith("v")
    c.get("/v1/users/u1/recommendations")
    m = c.get("/metrics")
    assert 'directrec_requests_total{method="GET",route="/v1/users/{id}/recommendations"' in m.text
    assert (
        "directrec_request_seconds_bucket" in m.text and "directrec_model_info{version=" in m.text
    )
    assert m.headers["X-Model-Version"] == ready.json()["model_version"]


def test_user_recommendations_are_real_unseen_items_with_titles(server):
    c = server.client
    hist = c.get("/v1/users/u7", params={"k": 1000}).json()
    r = c.get("/v1/users/u7/recommendations", params={"k": 15})
    assert r.status_code == 200
    body = r.json()
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 15 == len(set(ids)) and body["history_used"] == hist["interactions"]
    assert not {h["item_id"] for h in hist["history"]} & set(ids)
    assert (
        all(it["title"] for it in body["items"])
        and body["model_version"] == r.headers["X-Model-Version"]
    )
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # the planted signal: most of a user's list comes from their own topic
    assert sum(topic(i) == 7 % 6 for i in ids[:10]) >= 5


@pytest.mark.parametrize(
    "path, status",
    [
        ("/v1/users/nobody/recommendations", 404),
        ("/v1/users/u1/recommendations?k=0", 422),
        ("/v1/users/u1/recommendations?k=-1", 422),
        ("/v1/users/u1/recommendations?k=1000000000", 422),
        ("/v1/users/u1/recommendations?k=ten", 422),
        ("/v1/users/u1/recommendations?diversity=nan", 422),
        ("/v1/users/u1/recommendations?diversity=2", 422),
        ("/v1/items/nothing-here", 404),
        ("/v1/items?query=", 422),
        ("/v1/users/" + "x" * 300, 422),
    ],
)
def test_bad_queries_get_structured_4xx(server, path, status):
    r = server.client.get(path)
    assert r.status_code == status, r.text
    assert r.json()["error"]["status"] == status and r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body, status",
    [
        (b'{"history": ["i1", ', 422),  # truncated JSON
        (b'{"history": "i1"}', 422),  # wrong type
        (b'{"history": ["i1"], "k": NaN}', 422),
        (b'{"history": ["i1"], "diversity": NaN}', 422),
        (b'{"history": ["no-such-item"]}', 422),
        (b'{"history": ["i1"], "surprise": 1}', 422),
        (json.dumps({"history": ["i1"] * 1001}).encode(), 422),
        (b'{"history": ["\\ud800"]}', 422),  # a lone surrogate
        (b"[]", 422),
        (b"x" * (2 << 20), 413),
    ],
)
def test_bad_bodies_get_structured_4xx(server, body, status):
    r = server.client.post(
        "/v1/recommendations", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert r.json()["error"]["status"] == status


def test_ad_hoc_session_and_new_user_fallback(server):
    c = server.client
    space = ["i1", "i3", "i5", "i8"]  # topic 0
    r = c.post("/v1/recommendations", json={"history": space, "k": 10, "exclude_items": ["i2"]})
    body = r.json()
    ids = [it["item_id"] for it in body["items"]]
    assert r.status_code == 200 and body["user_id"] is None and not body["fallback"]
    assert not (set(space) | {"i2"}) & set(ids)
    assert sum(topic(i) == 0 for i in ids) >= 5
    empty = c.post("/v1/recommendations", json={"history": [], "k": 5}).json()
    assert empty["fallback"] and len(empty["items"]) == 5
    no_topic0 = c.post(
        "/v1/recommendations", json={"history": space, "k": 10, "exclude_categories": ["topic0"]}
    ).json()
    assert all(topic(it["item_id"]) != 0 for it in no_topic0["items"])


def test_diversity_knob_spreads_the_list_over_topics(server):
    c = server.client
    plain = c.get("/v1/users/u2/recommendations", params={"k": 10}).json()["items"]
    mixed = c.get("/v1/users/u2/recommendations", params={"k": 10, "diversity": 0.9}).json()[
        "items"
    ]
    assert len({topic(i["item_id"]) for i in mixed}) > len({topic(i["item_id"]) for i in plain})


def test_feedback_is_durable_deduplicated_and_used_at_once(server, world):
    db, _ = world
    c = server.client
    before = [it["item_id"] for it in c.get("/v1/users/u3/recommendations").json()["items"]]
    disliked = before[0]
    events = [
        {"user_id": "u3", "item_id": disliked, "type": "dislike", "idempotency_key": "fb-1"},
        {
            "user_id": "u3",
            "item_id": "i60",
            "type": "click",
            "idempotency_key": "fb-2",
            "timestamp": 2_000_000_000,
        },
        {"user_id": "brand-new", "item_id": "i61", "type": "rating", "value": 5},
    ]
    r = c.post("/v1/feedback", json={"events": events})
    assert r.status_code == 200 and r.json()["stored"] == 3
    again = c.post("/v1/feedback", json={"events": events[:2]}).json()
    assert again == {"stored": 0, "duplicates": 2, "results": ["duplicate", "duplicate"]}
    after = [it["item_id"] for it in c.get("/v1/users/u3/recommendations").json()["items"]]
    assert disliked not in after and "i60" not in after
    assert c.get("/v1/users/u3").json()["history"][0]["item_id"] == "i60"
    assert c.get("/v1/users/brand-new/recommendations").status_code == 200
    with sqlite3.connect(default_path(db)) as con:
        keys = [r[0] for r in con.execute("SELECT key FROM events WHERE key LIKE 'fb-%'")]
    assert sorted(keys) == ["fb-1", "fb-2"]
    bad = c.post(
        "/v1/feedback", json={"events": [{"user_id": "u3", "item_id": "i1", "type": "hug"}]}
    )
    assert bad.status_code == 422
    unknown = c.post(
        "/v1/feedback", json={"events": [{"user_id": "u3", "item_id": "zz", "type": "like"}]}
    )
    assert unknown.status_code == 422


def test_item_lookup_and_text_search(server):
    c = server.client
    item = c.get("/v1/items/i3").json()
    assert item["known_to_model"] and item["categories"] == ["topic0"]
    hits = c.get("/v1/items", params={"query": "haunted ghost", "k": 5}).json()["items"]
    assert all(topic(h["item_id"]) == 4 for h in hits)  # the horror cluster


def test_page_is_served(server):
    r = server.client.get("/")
    assert r.status_code == 200 and "directrec" in r.text and "/v1/feedback" in r.text


def test_openapi_lists_the_endpoints(server):
    paths = server.client.get("/openapi.json").json()["paths"]
    for p in (
        "/v1/users/{user_id}/recommendations",
        "/v1/recommendations",
        "/v1/feedback",
        "/v1/items/{item_id}",
        "/v1/items",
        "/v1/admin/reload",
        "/healthz",
        "/readyz",
    ):
        assert p in paths


def test_load_shedding_answers_fast_503_with_retry_after(world):
    """One request in flight at most, each held ~300 ms by the batching wait: of many
    concurrent requests some are shed at once, none fails otherwise."""
    db, reg = world
    s = Server(reg, db, "--max-inflight", "1", "--batch-wait-ms", "300")
    try:

        def get(_: int) -> httpx.Response:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                return c.get("/v1/users/u1/recommendations")

        with cf.ThreadPoolExecutor(8) as pool:
            res = list(pool.map(get, range(16)))
        codes = [r.status_code for r in res]
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes
        shed = [r for r in res if r.status_code == 503]
        assert all(r.headers["Retry-After"] == "1" for r in shed)
        assert max(r.elapsed.total_seconds() for r in shed) < 0.3
    finally:
        s.stop()


def test_explanations_cite_the_users_own_history(server):
    c = server.client
    hist = {h["item_id"] for h in c.get("/v1/users/u8", params={"k": 1000}).json()["history"]}
    r = c.get("/v1/users/u8/recommendations", params={"k": 5, "explain": True})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert all(it["reason"] for it in items)
    cited = [e for it in items for e in it["evidence"]]
    assert cited and set(cited) <= hist
    assert any(it["reason"].startswith("Because you liked") for it in items)


def test_new_user_described_by_a_sentence(server):
    r = server.client.post(
        "/v1/recommendations", json={"query": "haunted houses, ghosts and zombies", "k": 10}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["fallback"] and body["history_used"] == 5
    assert sum(topic(it["item_id"]) == 4 for it in body["items"]) >= 5  # the horror cluster


def test_reasons_for_a_sentence_read_as_matches_to_it(server):
    """The sentence's nearest items were never the user's: reasons cite them as matches to
    the sentence, never as things the user liked, and name them by their ids."""
    q = "haunted houses, ghosts and zombies"
    r = server.client.post("/v1/recommendations", json={"query": q, "k": 5, "explain": True})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 5 and all(it["reason"].startswith(f'Matches "{q}"') for it in items)
    assert any(it["evidence"] for it in items)
    # with a history too, the named items read as liked and the sentence's as matches
    liked = ["i3", "i7"]
    body = {"query": q, "history": liked, "k": 5, "explain": True}
    items = server.client.post("/v1/recommendations", json=body).json()["items"]
    for it in items:
        assert it["reason"].startswith("Because you liked") == bool(
            set(it["evidence"]) & set(liked)
        )


def test_a_sentence_only_request_gets_the_models_learned_query_prior(own_world, tmp_path):
    """A model whose learned query prior is all popularity (alpha 1, t 0) lists exactly the
    most popular items, the sentence's pseudo history included (the user never saw those);
    a request that also names a history is left to the model (the prior was learned on
    sentence-only requests), and what it names is excluded."""
    import numpy as np

    from directrec.generate.stages import QueryBlend, Stages
    from directrec.models import load_model
    from directrec.serve import registry

    db, reg = own_world
    model = load_model(registry.resolve(reg)[0])
    prior = Stages(query_blend=QueryBlend(alpha=1.0, t=0.0))
    registry.publish(model.save(tmp_path / "with-prior", extra=prior.files()), reg)
    s = Server(reg, db)
    try:
        sentence = {"query": "haunted houses, ghosts and zombies", "k": 10}
        body = s.client.post("/v1/recommendations", json=sentence).json()
        ids = [it["item_id"] for it in body["items"]]
        order = np.argsort(-model.popularity, kind="stable")
        items = model.meta["item_ids"]
        want = [items[i] for i in order][:10]
        pop = dict(zip(items, model.popularity.tolist(), strict=True))
        assert [pop[i] for i in ids] == [pop[i] for i in want]  # equal up to ties
        mixed = s.client.post(
            "/v1/recommendations", json={**sentence, "history": ["i80", "i81"]}
        ).json()
        named = [it["item_id"] for it in mixed["items"]]
        assert named != want and not {"i80", "i81"} & set(named)
    finally:
        s.stop()


def test_a_sentence_only_request_reads_category_names_as_the_model_learned(own_world, tmp_path):
    """A learned prior with a category share (w = 1, alpha 1, t 40): the service scores
    items by popularity tilted towards their category names' cosine to the sentence, the
    same computation `fit_query_blend` learned it on, which puts the named topic first,
    the sentence's own nearest items included."""
    import numpy as np

    from directrec.generate.coldstart import CategoryIndex
    from directrec.generate.stages import QueryBlend, Stages
    from directrec.models import load_model
    from directrec.serve import registry
    from directrec.text.encoder import encode

    db, reg = own_world
    model = load_model(registry.resolve(reg)[0])
    prior = Stages(query_blend=QueryBlend(alpha=1.0, t=40.0, w=1.0))
    registry.publish(model.save(tmp_path / "with-categories", extra=prior.files()), reg)
    items = model.meta["item_ids"]
    s = Server(reg, db)
    try:
        sentence = {"query": "topic4", "k": 10}
        ids = [
            it["item_id"]
            for it in s.client.post("/v1/recommendations", json=sentence).json()["items"]
        ]
        cats = CategoryIndex.build([[f"topic{topic(i)}"] for i in items]).cosines(
            encode(["topic4"])
        )
        score = np.log1p(model.popularity) + 40.0 * cats[0]
        want = [items[i] for i in np.argsort(-score, kind="stable")][:10]
        at = {it: score[j] for j, it in enumerate(items)}  # equal up to ties in popularity:
        np.testing.assert_allclose([at[i] for i in ids], [at[i] for i in want], rtol=1e-5)
        assert sum(topic(i) == 4 for i in ids) >= 8
        # The sentence's pseudo history (its nearest items by text) is not "seen": those
        # of its items that score into the top 10 are listed.
        pseudo = {
            it["item_id"]
            for it in s.client.get("/v1/items", params={"query": "topic4", "k": 5}).json()["items"]
        }
        assert pseudo & set(ids), (pseudo, ids)
    finally:
        s.stop()


# ------------------------------------------------------------------ API consistency
def assert_error_body(r: httpx.Response, status: int) -> dict:
    """The one documented error body, with no server path and no exception text."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and err["message"]
    for leak in ("Traceback", "/tmp/", "/work/", "site-packages", "Expecting value", "line 1"):
        assert leak not in r.text, r.text
    return err


def test_feedback_takes_iso_8601_timestamps_as_ingest_does(server, world):
    db, _ = world
    c = server.client
    events = [
        {
            "user_id": "u5",
            "item_id": "i41",
            "type": "view",
            "timestamp": "2024-05-01T12:00:00Z",
            "idempotency_key": "iso-1",
        },
        {
            "user_id": "u5",
            "item_id": "i42",
            "type": "view",
            "timestamp": "2024-05-01",
            "idempotency_key": "iso-2",
        },
        {
            "user_id": "u5",
            "item_id": "i43",
            "type": "view",
            "timestamp": "2024-05-01T14:00:00+02:00",
            "idempotency_key": "iso-3",
        },
    ]
    r = c.post("/v1/feedback", json={"events": events})
    assert r.status_code == 200 and r.json()["stored"] == 3, r.text
    with sqlite3.connect(default_path(db)) as con:
        ts = dict(con.execute("SELECT key, ts FROM events WHERE key LIKE 'iso-%'").fetchall())
    assert ts == {"iso-1": 1714564800, "iso-2": 1714521600, "iso-3": 1714564800}


def test_a_bad_timestamp_refuses_the_whole_batch_naming_the_event(server, world):
    db, _ = world
    events = [
        {"user_id": "u5", "item_id": "i44", "type": "view", "idempotency_key": "bad-ts-1"},
        {
            "user_id": "u5",
            "item_id": "i45",
            "type": "view",
            "timestamp": "2024-13-01",
            "idempotency_key": "bad-ts-2",
        },
    ]
    for word in ("now", "today"):  # words pandas would read as times
        bad = [{**events[1], "timestamp": word}]
        err = assert_error_body(server.client.post("/v1/feedback", json={"events": bad}), 422)
        assert err["fields"][0]["field"] == "body.events.0.timestamp"
    err = assert_error_body(server.client.post("/v1/feedback", json={"events": events}), 422)
    assert err["fields"][0]["field"] == "body.events.1.timestamp"
    assert "ISO-8601" in err["fields"][0]["message"]
    with sqlite3.connect(default_path(db)) as con:
        n = con.execute("SELECT count(*) FROM events WHERE key LIKE 'bad-ts-%'").fetchone()[0]
    assert n == 0


def test_k_is_the_list_length_on_every_endpoint(server):
    c = server.client
    assert len(c.get("/v1/users", params={"k": 3}).json()["users"]) == 3
    assert len(c.get("/v1/users/u7", params={"k": 2}).json()["history"]) == 2
    assert len(c.get("/v1/users/u7/recommendations", params={"k": 4}).json()["items"]) == 4
    assert len(c.get("/v1/items", params={"query": "ghost", "k": 3}).json()["items"]) == 3
    # the old name is refused, naming the new one
    err = assert_error_body(c.get("/v1/users/u7", params={"limit": 2}), 422)
    assert err["fields"] == [{"field": "query.limit", "message": "unknown parameter; renamed 'k'"}]


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/users/u1/recommendations?k=5&kk=5"),
        ("GET", "/v1/items?query=ghost&top=3"),
        ("POST", "/v1/recommendations?k=5"),
        ("GET", "/v1/users/u1/recommendations?k=5&k=6"),  # a single value given twice
    ],
)
def test_unknown_or_repeated_query_parameters_are_refused(server, method, path):
    r = server.client.request(method, path, json={"history": ["i1"]})
    err = assert_error_body(r, 422)
    assert err["fields"][0]["field"].startswith("query.")


def test_list_valued_parameters_may_repeat_and_the_page_link_takes_any(server):
    c = server.client
    r = c.get("/v1/users/u1/recommendations?exclude_categories=topic0&exclude_categories=topic1")
    assert r.status_code == 200, r.text
    assert c.get("/?user=u4&utm_source=mail").status_code == 200


@pytest.mark.parametrize("k", ["10.0", " 10", "+10", "1e1", "true", "ten"])
def test_k_in_a_query_is_digits_only(server, k):
    r = server.client.get("/v1/users/u1/recommendations", params={"k": k})
    assert assert_error_body(r, 422)["fields"][0]["field"] == "query.k"


@pytest.mark.parametrize(
    "field, value",
    [("k", "10"), ("k", True), ("k", 10.0), ("exclude_seen", "yes"), ("explain", 1)],
)
def test_body_fields_are_strict(server, field, value):
    r = server.client.post("/v1/recommendations", json={"history": ["i1"], field: value})
    assert assert_error_body(r, 422)["fields"][0]["field"] == f"body.{field}"


def test_invalid_json_gets_the_error_body(server):
    r = server.client.post(
        "/v1/feedback", content=b'{"events": [', headers={"Content-Type": "application/json"}
    )
    assert assert_error_body(r, 422)["message"] == "the request body is not valid JSON"


def test_an_unknown_path_gets_the_error_body(server):
    assert "/docs" in assert_error_body(server.client.get("/v1/nothing/here"), 404)["message"]


def test_a_wrong_method_gets_the_error_body_and_allow(server):
    r = server.client.get("/v1/feedback")
    assert_error_body(r, 405)
    assert r.headers["Allow"] == "POST"


def test_the_cli_and_the_service_agree_on_unknown_users_and_sentences(server, world):
    """Both refuse an unknown user (404, exit 2) and build one list for a sentence."""
    from typer.testing import CliRunner

    from directrec.cli import app

    db, reg = world

    def cli(*args: str):
        return CliRunner().invoke(app, ["recommend", "--model", str(reg), "--db", str(db), *args])

    assert server.client.get("/v1/users/nobody/recommendations").status_code == 404
    res = cli("--user", "nobody")
    assert res.exit_code == 2 and "unknown user 'nobody'" in res.output
    sentence = "haunted houses, ghosts and zombies"
    http = server.client.post("/v1/recommendations", json={"query": sentence, "k": 10}).json()
    res = cli("--query", sentence, "--k", "10", "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)  # stderr may hold the encoder's loading bar
    assert [r["item_id"] for r in got["items"]] == [it["item_id"] for it in http["items"]]
    assert got["history_used"] == http["history_used"] == 5
    empty = server.client.post("/v1/recommendations", json={"history": [], "k": 5}).json()
    res = cli("--cold-start", "--k", "5", "--json")
    assert [r["item_id"] for r in json.loads(res.stdout)["items"]] == [
        it["item_id"] for it in empty["items"]
    ]
