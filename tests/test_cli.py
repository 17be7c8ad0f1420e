"""The CLI end to end on tiny data: ingest → benchmark → train → recommend, and the
errors a user sees on bad input."""

from __future__ import annotations

import json
import re
import tomllib

import numpy as np
import pytest
from typer.testing import CliRunner

from directrec.cli import app
from directrec.recipes import Recipe
from tests.conftest import planted_frames

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    inter, items = planted_frames(n_users=120)
    inter[["user_id", "item_id", "timestamp", "rating"]].to_csv(d / "log.csv", index=False)
    items.assign(categories=items["categories"].map("|".join)).to_csv(d / "items.csv", index=False)
    db = d / "s.duckdb"
    res = run(
        "ingest",
        "--format",
        "csv",
        "--interactions",
        d / "log.csv",
        "--items",
        d / "items.csv",
        "--columns",
        "rating=rating",
        "--db",
        db,
    )
    assert res.exit_code == 0, res.output
    assert "120 users" in res.output
    return d, db


# A generator that cannot have learned anything: one epoch at a vanishing learning rate.
WEAK = ["--set", "sasrec-ce.max_len=20", "--set", "sasrec-ce.dim=16", "--set", "sasrec-ce.epochs=1"]
WEAK += ["--set", "sasrec-ce.lr=1e-7", "--set", "sasrec-ce.eval_every=1"]


def test_benchmark_writes_results(store):
    d, db = store
    names = ["pop", "itemknn", "ease", "sasrec-ce"]
    res = run(
        "benchmark",
        "--db",
        db,
        "--models",
        ",".join(names),
        "--k",
        "5,10",
        "--out",
        d / "bench",
        "--no-isolate",
        "--set",
        "ease.l2=50",
        *WEAK,
        "--save-models",
        d / "models",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((d / "bench" / "results.json").read_text())
    from directrec.models import load_model

    assert load_model(d / "models" / "ease").config.l2 == 50.0  # the fitted model is kept
    assert [r["model"] for r in doc["results"]] == names
    by = {r["model"]: r for r in doc["results"]}
    for r in doc["results"]:  # every metric a share, every model where it should be
        assert {"hr@5", "hr@10", "ndcg@5", "ndcg@10", "recall@5", "mrr@5"} <= set(r["metrics"])
        assert all(0.0 <= r["metrics"][m] <= 1.0 for m in ("hr@5", "ndcg@10", "coverage@10"))
        assert r["metrics"]["hr@5"] <= r["metrics"]["hr@10"]
        assert (
            r["recipe"]["recipe"]["model"] == r["model"] and r["recipe"]["settings"]["seed"] == 42
        )
    # the planted clusters: co-occurrence beats popularity by far, the untrained generator not
    assert by["ease"]["metrics"]["ndcg@10"] > 2 * by["pop"]["metrics"]["ndcg@10"]
    assert by["itemknn"]["metrics"]["ndcg@10"] > by["sasrec-ce"]["metrics"]["ndcg@10"]
    assert by["ease"]["recipe"]["settings"]["l2"] == 50.0
    assert by["sasrec-ce"]["recipe"]["settings"]["lr"] == 1e-7
    assert [by[m]["stopped"] for m in names] == ["—", "—", "—", "epochs exhausted (1)"]
    best = max(names[:3], key=lambda m: by[m]["metrics"]["ndcg@10"])
    gen = by["sasrec-ce"]["metrics"]["ndcg@10"]
    warning = (
        f"generator sasrec-ce scores below the best classic model, {best}: "
        f"NDCG@10 {gen:.4f} against {by[best]['metrics']['ndcg@10']:.4f}"
    )
    assert warning in doc["warnings"] and warning in res.output  # results.json and stderr
    below_pop = gen < by["pop"]["metrics"]["ndcg@10"]
    assert below_pop == any("below popularity" in w for w in doc["warnings"])
    md = (d / "bench" / "results.md").read_text()
    assert md.splitlines()[2].startswith("| model | hr@5 | ndcg@5 | hr@10 | ndcg@10 |")
    assert md.splitlines()[2].endswith("| peak MB | stopped |")
    main = md.split("**Bold**")[0]  # the main table; the history-length tables follow
    assert all(main.count(f"| {m} |") == 1 for m in names)
    assert "| epochs exhausted (1) |" in md and f"- {warning}" in md.split("**Warnings**")[1]
    ease = by["ease"]
    # a kept model carries its id map, so `evaluate` scores it again without refitting
    ev = run("evaluate", "--model", d / "models" / "ease", "--db", db, "--k", "5,10")
    assert ev.exit_code == 0, ev.output
    assert f"| ease | {ease['metrics']['hr@5']:.4f} |" in ev.output
    assert f"{ease['metrics']['ndcg@10']:.4f}" in ev.output
    assert ease["config"]["l2"] == 50.0 and ease["fit_seconds"] >= 0 and ease["peak_rss_mb"] > 0
    assert {"hr@5", "ndcg@10", "coverage@10", "novelty@5"} <= set(ease["metrics"])
    assert set(ease["segments"]) == {"<=5", "6-20", ">20"}
    seg = md.split("**NDCG@5 by history length**")[1]
    assert f"| ease | — | {ease['segments']['6-20']['ndcg@5']:.4f} |" in seg  # no user ≤ 5
    assert doc["dataset"]["fingerprint"] and doc["spec"]["seed"] == 42
    assert "seed 42 (n=1, no interval)" in md.splitlines()[0] and ease["seeds"] == [42]
    assert (d / "bench" / "comparison.png").stat().st_size > 1000
    assert "| itemknn |" in res.output
    res = run(
        "benchmark",
        "--db",
        db,
        "--models",
        "ease",
        "--out",
        d / "div",
        "--no-isolate",
        "--diversity-sweep",
        "0,0.5,0.9",
    )
    assert res.exit_code == 0, res.output
    sweep = json.loads((d / "div" / "results.json").read_text())["results"][0]["diversity_sweep"]
    assert [p["diversity"] for p in sweep] == [0, 0.5, 0.9]
    assert (d / "div" / "diversity.png").stat().st_size > 1000
    assert (
        run(
            "benchmark", "--db", db, "--models", "ease", "--out", d / "x", "--diversity-sweep", "2"
        ).exit_code
        == 2
    )


def test_benchmark_with_seeds_reports_intervals_and_tests_the_leader(store):
    """--seeds 2: every model twice, mean ± t interval in the table, the best model per
    metric in bold with † where its lead over the runner-up is significant over users."""
    d, db = store
    names = ["pop", "itemknn", "als"]
    res = run(
        "benchmark", "--db", db, "--models", ",".join(names), "--k", "5,10", "--seeds", 2,
        "--out", d / "seeds", "--no-isolate", "--set", "als.factors=16",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((d / "seeds" / "results.json").read_text())
    assert doc["spec"]["seeds"] == 2 and [r["model"] for r in doc["results"]] == names
    by = {r["model"]: r for r in doc["results"]}
    for r in doc["results"]:
        assert r["seeds"] == [42, 43] and [s["seed"] for s in r["per_seed"]] == [42, 43]
        for m in ("ndcg@10", "hr@5"):  # the mean of the seeds, and t(0.975, 1)·|x1 − x2| / 2
            x1, x2 = (s["metrics"][m] for s in r["per_seed"])
            assert r["metrics"][m] == pytest.approx((x1 + x2) / 2)
            assert r["interval"][m]["half_width"] == pytest.approx(12.7062 * abs(x1 - x2) / 2)
    als = [s["metrics"]["ndcg@10"] for s in by["als"]["per_seed"]]
    assert als[0] != als[1]  # the seed reaches the model: two different fits
    md = (d / "seeds" / "results.md").read_text()
    assert "seeds 42, 43 (n=2)" in md.splitlines()[0]
    leads = {c["metric"]: c for c in doc["comparisons"]}
    assert {"hr@5", "ndcg@5", "hr@10", "ndcg@10", "recall@5", "mrr@5"} <= set(leads)
    assert not any(c["metric"].startswith(("coverage", "novelty")) for c in doc["comparisons"])
    cols = md.splitlines()[2].split(" | ")
    rows = {x.split(" | ")[0][2:]: x.split(" | ") for x in md.splitlines()[4:7]}
    for metric in ("ndcg@10", "hr@5"):
        lead, j = leads[metric], cols.index(metric)
        order = sorted(names, key=lambda m: -by[m]["metrics"][metric])
        assert (lead["best"], lead["runner_up"]) == tuple(order[:2]) and lead["users"] == 120
        assert lead["significant"] == (lead["p_value"] < 0.05)
        best = by[lead["best"]]
        cell = f"**{best['metrics'][metric]:.4f} ± {best['interval'][metric]['half_width']:.4f}**"
        assert rows[lead["best"]][j] == cell + (" †" if lead["significant"] else "")
        assert all("**" not in rows[m][j] for m in order[1:])
        verdict = "yes †" if lead["significant"] else "no"
        assert f"| {metric} | {lead['best']} | {lead['runner_up']} |" in md
        assert (
            md.split(f"| {metric} | {lead['best']} |")[1].split("\n")[0].endswith(f"| {verdict} |")
        )
    # the planted clusters make item co-occurrence the clear leader over everything here
    assert leads["ndcg@10"]["best"] == "itemknn" and leads["ndcg@10"]["significant"]
    assert "**0." not in rows["pop"][cols.index("coverage@5")]  # lists' breadth ranks no one
    for metric in ("NDCG@5", "HR@5"):  # per-history-length tables, seed means
        seg = md.split(f"**{metric} by history length**")[1].split("\n\n")[1]
        for m in names:
            v = by[m]["segments"][">20"][metric.lower()]
            assert f"| {m} | — | " in seg and seg.split(f"| {m} |")[1].split("\n")[0].endswith(
                f"| {v:.4f} |"
            )
    assert run("benchmark", "--db", db, "--out", d / "x", "--seeds", 0).exit_code == 2
    res = run("benchmark", "--db", db, "--out", d / "x", "--seeds", 2, "--protocol", "cold-items")
    assert res.exit_code == 2 and "--seeds applies to the standard protocol" in res.output


def test_rating_benchmark(store):
    d, db = store
    res = run(
        "benchmark",
        "--db",
        db,
        "--task",
        "rating",
        "--models",
        "biasedmf",
        "--out",
        d / "rating",
        "--no-isolate",
        "--set",
        "epochs=30",
        "--set",
        "lr=0.01",
        "--set",
        "factors=8",
        "--set",
        "batch_size=64",
    )
    assert res.exit_code == 0, res.output
    r = json.loads((d / "rating" / "results.json").read_text())["results"][0]
    # Planted ratings (5 in the user's cluster, 1-3 elsewhere) are learnable: well below
    # the global-mean predictor, on a 10% random hold-out of every rating.
    assert r["metrics"]["rmse"] < 0.8 * r["reference"]["global_mean_rmse"]
    assert r["metrics"]["mae"] < r["metrics"]["rmse"] + 1e-9
    assert (
        r["n_train"] + r["n_test"]
        == json.loads((d / "rating" / "results.json").read_text())["dataset"]["interactions"]
    )


def test_train_and_recommend(store):
    d, db = store
    res = run("train", "itemknn", "--db", db, "--out", d / "m")
    assert res.exit_code == 0, res.output
    res = run("recommend", "--model", d / "m", "--db", db, "--user", "u3", "--k", "5", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert len(out["items"]) == 5 and not out["fallback"] and out["items"][0]["title"]
    res = run("recommend", "--model", d / "m", "--db", db, "--cold-start", "--k", "3", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["fallback"] is True
    res_args = ("recommend", "--model", d / "m", "--db", db, "--user", "u3", "--k", "10")
    res_args += ("--explain", "--diversity", "0.5")
    res = run(*res_args)
    assert res.exit_code == 0, res.output
    # Each item cites what measurably supports it, or says nothing single does; the text
    # shows item ids beside titles (titles repeat) and the ids of the cited history items.
    lines = res.output.splitlines()
    reasons = [x.strip() for x in lines if x.startswith("     ")]
    assert len(reasons) == 10
    assert all(r.startswith(("Because you", "Fits your history as a whole")) for r in reasons)
    assert any(r.startswith("Because you") for r in reasons)
    listed = [x for x in lines if x[:4].strip().endswith(".") and x[:3].strip().isdigit()]
    assert len(listed) == 10 and all(re.search(r"\(id i\d+\)", x) for x in listed), listed
    res = run(*res_args, "--json")
    as_json = json.loads(res.output)["items"]
    assert [x.split("(id ")[1].split(")")[0] for x in listed] == [x["item_id"] for x in as_json]
    for r, x in zip(reasons, as_json, strict=True):
        cited = re.search(r"\[evidence: ([^\]]+)\]$", r)
        assert (cited.group(1).split(", ") if cited else []) == x["evidence"], r


def test_recommend_refuses_an_unknown_user_as_the_service_does(store):
    """An unknown --user is an error (the service's 404), naming the ways to a new user's
    list; --cold-start is the list a user with no history gets."""
    d, db = store
    if not (d / "m").exists():
        assert run("train", "itemknn", "--db", db, "--out", d / "m").exit_code == 0
    res = run("recommend", "--model", d / "m", "--db", db, "--user", "nobody", "--k", "3")
    assert res.exit_code == 2
    assert "unknown user 'nobody'" in res.output and "--cold-start" in res.output
    assert "--query" in res.output
    for both in (["--user", "u1", "--query", "ghosts"], ["--user", "u1", "--cold-start"], []):
        res = run("recommend", "--model", d / "m", "--db", db, *both)
        assert res.exit_code == 2 and "exactly one of" in res.output


def test_recommend_reads_the_feedback_log_as_the_service_does(store, tmp_path):
    """A user known only from feedback has a list, and a disliked item is left out."""
    import shutil

    from directrec.serve.feedback import Event, FeedbackLog, default_path

    d, db = store
    if not (d / "m").exists():
        assert run("train", "itemknn", "--db", db, "--out", d / "m").exit_code == 0
    own = tmp_path / "s.duckdb"
    shutil.copy(db, own)
    base = ["recommend", "--model", d / "m", "--db", own, "--k", "10", "--json"]
    before = json.loads(run(*base, "--user", "u3").output)["items"]
    disliked = before[0]["item_id"]
    log = FeedbackLog(default_path(own))
    log.add([Event("fresh", "i81", "like", 1.0), Event("u3", disliked, "dislike", 2.0)])
    log.close()
    res = run(*base, "--user", "fresh")
    assert res.exit_code == 0, res.output
    fresh = json.loads(res.output)
    assert fresh["history_used"] == 1 and not fresh["fallback"]
    assert "i81" not in [r["item_id"] for r in fresh["items"]]
    after = [r["item_id"] for r in json.loads(run(*base, "--user", "u3").output)["items"]]
    assert disliked not in after and after[:9] == [r["item_id"] for r in before[1:]]


def test_recommend_for_a_new_user_described_by_a_sentence(store):
    d, db = store
    if not (d / "m").exists():
        assert run("train", "itemknn", "--db", db, "--out", d / "m").exit_code == 0
    q = "haunted houses, ghosts and zombies"
    res = run("recommend", "--model", d / "m", "--db", db, "--query", q, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # stderr may hold the encoder's loading bar
    assert out["query"] == q and out["user"] is None
    assert not out["fallback"] and out["history_used"] == 5
    assert out["items"][0]["categories"]
    # the planted horror cluster (topic 4: items 80-99)
    assert sum(int(r["item_id"][1:]) // 20 == 4 for r in out["items"]) >= 5
    res = run("recommend", "--model", d / "m", "--db", db, "--query", q)
    assert res.exit_code == 0 and f"top-10 for “{q}”" in res.output


def test_generative_model_trains_with_early_stopping(store):
    d, db = store
    small = ["--set", "max_len=20", "--set", "dim=16", "--set", "epochs=4", "--set", "eval_every=2"]
    res = run("train", "sasrec-ce", "--db", db, "--out", d / "sas", *small)
    assert res.exit_code == 0, res.output
    assert (d / "sas" / "training_curve.png").stat().st_size > 1000
    cfg = json.loads((d / "sas" / "config.json").read_text())
    log = cfg["meta"]["train_log"]
    assert len(log) == 4 and [r["epoch"] for r in log if "valid_ndcg@10" in r] == [2, 4]
    best = max((r for r in log if "valid_ndcg@10" in r), key=lambda r: r["valid_ndcg@10"])
    assert cfg["meta"]["best_epoch"] == best["epoch"]  # the kept weights are the best validated
    assert cfg["meta"]["best_valid_ndcg@10"] == pytest.approx(best["valid_ndcg@10"], abs=1e-5)
    res = run("recommend", "--model", d / "sas", "--db", db, "--user", "u7", "--json")
    assert res.exit_code == 0 and len(json.loads(res.output)["items"]) == 10
    res = run(
        "benchmark",
        "--db",
        db,
        "--models",
        "sasrec-ce",
        "--out",
        d / "sasb",
        "--no-isolate",
        *small,
    )
    assert res.exit_code == 0, res.output
    r = json.loads((d / "sasb" / "results.json").read_text())["results"][0]
    assert r["best_epoch"] in (2, 4) and (d / "sasb" / "curve-sasrec-ce.png").exists()


def test_train_learns_the_new_user_blend_on_held_out_users(store):
    """--blend-users: those users are left out of the fit; the popularity blend by history
    length is learned on them, saved, and applied to a one-item history."""
    d, db = store
    small = ["--set", "max_len=20", "--set", "dim=16", "--set", "epochs=3", "--set", "eval_every=3"]
    res = run("train", "sasrec-ce", "--db", db, "--out", d / "blend", "--blend-users", 30, *small)
    assert res.exit_code == 0, res.output
    assert "prior_blend (popularity weight by history length)" in res.output
    config = json.loads((d / "blend" / "config.json").read_text())
    assert "prior_blend" not in config["meta"]  # the stages are typed, beside the model
    stages = json.loads((d / "blend" / "stages.json").read_text())
    fit = stages["fits"]["prior_blend"]
    assert fit["held_out_users"] == 30 and fit["lengths"][0] == 1
    assert stages["stages"]["prior_blend"] == {"lengths": fit["lengths"], "alpha": fit["alpha"]}
    assert all(b >= m for b, m in zip(fit["recall_blend"], fit["recall_model"], strict=True))
    # the planted items have categories and titles: the sentence-request prior is learned too
    q = stages["fits"]["query_blend"]
    assert "query_blend: alpha" in res.output and q["cases"] == 30
    assert stages["stages"]["query_blend"] == {"alpha": q["alpha"], "t": q["t"], "w": q["w"]}
    assert q["recall_blend"] >= max(q["recall_model"], q["recall_popularity"])
    # ...and the saved pipeline applies the prior to a one-item history as learned
    import torch

    from directrec.data.histories import Histories
    from directrec.generate.pipeline import ranked
    from directrec.generate.stages import load_pipeline

    model, fitted = load_pipeline(d / "blend")
    assert fitted.prior_blend is not None and fitted.query_blend is not None
    h = Histories.from_lists([np.array([3])], model.n_items)
    n = model.n_items
    own = ranked(model, h, n).dense(n)
    piped = ranked(model, h, n, stages=fitted).dense(n)
    a = fitted.prior_blend.alpha[0]
    pop = torch.from_numpy(model.popularity / model.popularity.sum()).float()
    want = torch.log((1 - a) * torch.softmax(model.score(h)[0], 0) + a * pop + 1e-30)
    want[3] = -torch.inf
    torch.testing.assert_close(piped[0], want if a > 0 else own[0], rtol=1e-4, atol=1e-5)


def test_bad_input_exits_2_naming_file_line_field(store, tmp_path):
    _, db = store
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\nu1,i1,10\nu1,i2,notatime\n")
    res = run("ingest", "--interactions", bad, "--db", db, "--append")
    assert res.exit_code == 2
    assert "bad.csv:3" in res.output and "timestamp" in res.output
    res = run("info", "--db", db)
    assert json.loads(res.output)["users"] == 120  # untouched


def test_usage_errors(store):
    d, db = store
    assert run("benchmark", "--db", db, "--models", "nope", "--out", d / "x").exit_code == 2
    res = run("benchmark", "--db", db, "--models", "ease", "--set", "ease.l2=abc", "--out", d / "x")
    assert res.exit_code == 2 and "float" in res.output
    assert run("train", "nope", "--db", db, "--out", d / "y").exit_code == 2
    assert run("recommend", "--model", d / "none", "--user", "u1").exit_code == 2
    assert run("ingest", "--db", d / "z.duckdb").exit_code == 2


def shop_files(d):
    """Events under the user's own column names, a catalogue that lacks item `z`."""
    (d / "ev.csv").write_text(
        "uid,sku,ts,stars\nu1,a,881250949.5,5\nu1,b,881250950,3\nu2,a,881250951,1\n"
        "u2,z,881250952,4\nu2,z,881250953,4\n"
    )
    (d / "cat.csv").write_text("sku,name\na,Alpha\nb,Beta\n")
    return ["--interactions", d / "ev.csv", "--columns", "user=uid,item=sku,time=ts,rating=stars"]


def test_ingest_summary_counts_what_was_kept_dropped_and_uncatalogued(tmp_path):
    events = shop_files(tmp_path)
    res = run(
        "ingest", *events, "--items", tmp_path / "cat.csv", "--item-columns", "id=sku,title=name",
        "--min-rating", "2", "--dedup", "last", "--db", tmp_path / "s.duckdb",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "rows: 5 read, 3 kept, 2 dropped (1 rating below --min-rating 2.0; " in res.output
    assert "1 repeated (user, item), --dedup last)" in res.output
    assert "kept: 2 users, 3 items" in res.output
    assert "times: 1997-12-04 15:55:49 to 1997-12-04 15:55:53 UTC (Unix seconds" in res.output
    assert "warning: 1 item of the interactions not in the catalogue" in res.output
    assert "warning: 1 time with a fraction of a second" in res.output
    info = json.loads(run("info", "--db", tmp_path / "s.duckdb").output)
    assert (info["interactions"], info["items"]) == (3, 3)  # z was added, and counted


def test_ingest_errors_name_the_users_columns_and_leave_the_store_as_it_was(tmp_path):
    events = shop_files(tmp_path)
    db = tmp_path / "s.duckdb"
    assert run("ingest", *events, "--db", db).exit_code == 0
    before = db.read_bytes()
    cat = ["--items", tmp_path / "cat.csv", "--item-columns", "id=sku,title=name"]
    res = run("ingest", *events, *cat, "--strict", "--db", db, "--append")
    assert res.exit_code == 2 and "ev.csv:5: field 'sku': item 'z' is not in the catalogue" in (
        res.output
    )
    # A mapped time column the file lacks: refused with the columns it has, not NULL times.
    for extra in ([], ["--append"]):
        res = run("ingest", *events[:3], "user=uid,item=sku,time=when", "--db", db, *extra)
        assert res.exit_code == 2
        assert "ev.csv:1: field 'when'" in res.output and "'uid', 'sku', 'ts'" in res.output
    res = run("ingest", *events, "--item-columns", "id=sku,text=blurb", *cat[:2], "--db", db)
    assert res.exit_code == 2 and "cat.csv:1: field 'blurb'" in res.output
    (tmp_path / "semi.csv").write_text("uid;sku;ts\nu1;a;1\n")
    res = run("ingest", "--interactions", tmp_path / "semi.csv", "--db", db)
    assert res.exit_code == 2 and "looks semicolon-delimited: pass --delimiter ';'" in res.output
    assert db.read_bytes() == before
    res = run(
        "ingest", "--interactions", tmp_path / "semi.csv", "--delimiter", ";",
        "--columns", "user=uid,item=sku,time=ts", "--time-unit", "s", "--db", db,
    )  # fmt: skip
    assert res.exit_code == 0 and "rows: 1 read, 1 kept, 0 dropped" in res.output


def test_bundled_dataset_ingest(tmp_path):
    res = run("ingest", "--dataset", "ml-100k", "--db", tmp_path / "ml.duckdb")
    assert res.exit_code == 0 and "100,000 interactions" in res.output


TINY_RECIPE = """
[recipe]
version = 1
name = "tiny"
model = "sasrec-ce"
description = "a small ID head for tests"

[network]
max_len = 20
dim = 16

[training]
epochs = 2
eval_every = 2

[stages.prior_blend]
users = 30

[benchmark]
models = ["pop", "itemknn"]
k = [5]
valid_users = 40
"""


def test_recipes_list_and_show(tmp_path):
    from directrec.recipes import resolve, shipped

    res = run("recipes")
    assert res.exit_code == 0, res.output
    assert all(name in res.output for name in shipped())
    assert "0.1890" in res.output  # the ML-1M recipe's measured NDCG@10
    # and the command that reproduces it, on one line
    assert f"ml1m-sasrec-ce: {resolve('ml1m-sasrec-ce').measured.command}\n" in res.output
    assert run("recipes", "list").output == res.output
    res = run("recipes", "show", "amazon-5core")
    assert res.exit_code == 0, res.output
    assert tomllib.loads(res.output) == resolve("amazon-5core").to_dict(by_part=True)
    # a setting under another part's table: the error names both tables
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_RECIPE.replace("dim = 16", "dim = 16\nlr = 0.1"))
    res = run("recipes", "show", bad)
    assert res.exit_code == 2
    assert "[network]: 'lr' is a training setting" in res.output and "[training]" in res.output
    res = run("recipes", "show", "amazon-5cor")
    assert res.exit_code == 2 and "'amazon-5core'" in res.output
    assert run("recipes", "show").exit_code == 2  # a name or --model, one of them


def test_train_with_a_recipe_stores_the_resolved_recipe(store, tmp_path):
    d, db = store
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    # no MODEL: the recipe's; --set wins over the recipe's epochs
    res = run("train", "--recipe", recipe, "--db", db, "--out", d / "r", "--set", "epochs=1")
    assert res.exit_code == 0, res.output
    assert "prior_blend" in res.output  # the stage this command does not fit is named
    cfg = json.loads((d / "r" / "config.json").read_text())
    assert (
        cfg["model"] == "sasrec-ce" and cfg["config"]["epochs"] == 1 and cfg["config"]["dim"] == 16
    )
    res = run("recipes", "show", "--model", d / "r")
    assert res.exit_code == 0, res.output
    shown = tomllib.loads(res.output)
    assert shown["recipe"]["name"] == "tiny" and shown["recipe"]["model"] == "sasrec-ce"
    # the file groups its settings by part
    assert shown["network"] == {"max_len": 20, "dim": 16}
    assert shown["training"] == {"epochs": 1, "eval_every": 2, "seed": 42}
    assert shown["stages"] == {"prior_blend": {"users": 30}}
    # a MODEL that contradicts the recipe, an unknown key, nothing to train: refused
    res = run("train", "ease", "--recipe", recipe, "--db", db, "--out", d / "x")
    assert res.exit_code == 2 and "trains sasrec-ce, not ease" in res.output
    res = run("train", "--recipe", recipe, "--db", db, "--out", d / "x", "--set", "layres=3")
    assert res.exit_code == 2 and "'layers'" in res.output
    res = run("train", "sasrec-ce", "--db", db, "--out", d / "x", "--set", "sasrec-ce.lrr=1")
    assert res.exit_code == 2 and "'lr'" in res.output
    assert run("train", "--db", db, "--out", d / "x").exit_code == 2
    assert not (d / "x").exists()


def test_train_a_model_records_its_own_recipe(store):
    """`train MODEL` runs the shipped recipe named like the model, else its defaults."""
    d, db = store
    res = run("train", "ease", "--db", db, "--out", d / "e", "--set", "l2=20")
    assert res.exit_code == 0, res.output
    shown = tomllib.loads(run("recipes", "show", "--model", d / "e").output)
    assert shown["recipe"]["model"] == "ease" and shown["model"] == {"l2": 20.0}
    assert shown["training"] == {"seed": 42}


def test_recipes_show_model_says_what_the_fit_chose(store):
    """The semantic-ID hybrid picks its ID weight on validation while fitting: the recipe a
    saved model shows says which weight, beside the settings it was asked for."""
    d, db = store
    tiny = "codebook=8,rq_epochs=5,max_len=10,dim=16,heads=1,enc_layers=1,dec_layers=1"
    sets = [x for kv in [*tiny.split(","), "epochs=2", "id_loss=1.0"] for x in ("--set", kv)]
    res = run("train", "semantic-id", "--db", db, "--out", d / "hyb", "--holdout", "loo", *sets)
    assert res.exit_code == 0, res.output
    config = json.loads((d / "hyb" / "config.json").read_text())
    chosen = config["config"]["id_weight"]
    shown = run("recipes", "show", "--model", d / "hyb").output
    assert f"# chosen on validation by the fit: id_weight = {chosen} (" in shown
    assert tomllib.loads(shown)["training"]["id_loss"] == 1.0  # still a recipe


def test_train_without_a_recipe_takes_the_one_fitting_the_data(store, monkeypatch):
    """With no --recipe, `train MODEL` takes the shipped recipe whose `fits` the store's
    shape matches (here every shape matches), says so, and stores it; --recipe MODEL
    keeps the defaults."""
    from directrec import recipes as R

    d, db = store
    monkeypatch.setattr(R.Fits, "matches", lambda self, shape: True)
    res = run("train", "sasrec-ce", "--db", db, "--out", d / "fit", "--set", "epochs=1")
    assert res.exit_code == 0, res.output
    assert "recipe ml1m-sasrec-ce (chosen for" in res.output
    assert "--recipe sasrec-ce for the defaults" in res.output
    shown = tomllib.loads(run("recipes", "show", "--model", d / "fit").output)
    assert shown["recipe"]["name"] == "ml1m-sasrec-ce" and shown["network"]["layers"] == 4
    res = run("train", "--recipe", "sasrec-ce", "--db", db, "--out", d / "own", "--set", "epochs=1")
    assert res.exit_code == 0 and "chosen for" not in res.output
    shown = tomllib.loads(run("recipes", "show", "--model", d / "own").output)
    assert shown["recipe"]["name"] == "sasrec-ce"


def test_benchmark_and_evaluate_take_a_recipe(store, tmp_path):
    d, db = store
    recipe = tmp_path / "tiny.toml"
    diverse = "[stages.diversify]\nusers = 40\nkeep = 0.5\n\n[benchmark]"
    recipe.write_text(
        TINY_RECIPE.replace("epochs = 2", "epochs = 2\nlr = 1e-7").replace("[benchmark]", diverse)
    )
    res = run(
        "benchmark", "--db", db, "--recipe", recipe, "--out", d / "rb", "--no-isolate",
        "--set", "sasrec-ce.epochs=1", "--save-models", d / "rbm",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((d / "rb" / "results.json").read_text())
    assert doc["spec"]["models"] == ["pop", "itemknn", "sasrec-ce"]  # anchors, then the recipe
    assert doc["spec"]["ks"] == [5] and doc["spec"]["valid_users"] == 40
    gen = doc["results"][2]
    assert gen["config"]["epochs"] == 1 and gen["config"]["dim"] == 16  # --set over the recipe
    assert gen["recipe"]["recipe"]["name"] == "tiny" and gen["recipe"]["settings"]["epochs"] == 1
    assert gen["recipe"]["stages"] == {
        "prior_blend": {"users": 30},
        "diversify": {"users": 40, "keep": 0.5},
    }
    # the recipe's stages were fitted on validation cases, saved, and evaluated with
    fitted = gen["stages"]
    assert set(fitted["stages"]) <= {"prior_blend", "diversify"} and "diversify" in fitted["stages"]
    assert fitted["fits"]["diversify"]["cases"] == 40
    assert (d / "rbm" / "sasrec-ce" / "stages.json").exists()
    assert "stages" not in doc["results"][1]  # the anchors have no recipe stages
    assert gen["stopped"] == "epochs exhausted (1)"
    assert any(w.startswith("generator sasrec-ce scores below") for w in doc["warnings"])
    saved = tomllib.loads(run("recipes", "show", "--model", d / "rbm" / "sasrec-ce").output)
    assert Recipe.from_dict(saved, "shown").to_dict() == gen["recipe"]  # the same recipe
    # evaluate: the recipe's protocol gives the cut-offs
    res = run("evaluate", "--model", d / "rbm" / "itemknn", "--db", db, "--recipe", recipe)
    assert res.exit_code == 0, res.output
    assert "hr@5" in res.output and "hr@10" not in res.output
    res = run("evaluate", "--model", d / "rbm" / "sasrec-ce", "--db", db, "--recipe", recipe)
    assert res.exit_code == 0 and "| epochs exhausted (1) |" in res.output  # how it stopped


def test_cold_items_takes_the_recipes_gate_parameters(store, tmp_path):
    """--protocol cold-items holds out the share of items the recipe's cold gate names and
    keeps its min_warm, when --holdout is not given; the run says how the fit stopped."""
    d, db = store
    recipe = tmp_path / "gate.toml"
    recipe.write_text(
        '[recipe]\nversion = 1\nname = "gate"\nmodel = "semantic-id"\n\n[settings]\n'
        "codebook = 8\nrq_epochs = 5\nmax_len = 10\ndim = 16\nheads = 1\nenc_layers = 1\n"
        "dec_layers = 1\nepochs = 2\n\n[stages.cold_gate]\nholdout = 0.1\nmin_warm = 0.9\n"
    )
    out = d / "gate"
    res = run(
        "benchmark",
        "--recipe",
        recipe,
        "--db",
        db,
        "--models",
        "pop",
        "--protocol",
        "cold-items",
        "--out",
        out,
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["holdout"] == 0.1 and doc["min_warm"] == 0.9 and doc["cold_items"] == 12
    assert doc["models"]["semantic-id"]["stopped"] == "epochs exhausted (2)"
    assert doc["models"]["pop"]["stopped"] == "—"


def test_benchmark_runs_the_cold_start_protocols(store):
    """--protocol cold-items and new-users write their tables from real fits."""
    d, db = store
    res = run(
        "benchmark",
        "--db",
        db,
        "--models",
        "pop,content",
        "--protocol",
        "cold-items",
        "--holdout",
        0.1,
        "--out",
        d / "cold",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((d / "cold" / "results.json").read_text())
    assert doc["protocol"] == "cold-items" and doc["cold_items"] == 12
    assert set(doc["models"]) == {"pop", "content"} and doc["dataset"]["users"] == 120
    # popularity counts training rows only: a held-out item is never in its lists
    assert doc["models"]["pop"]["cold_targets"]["recall@10"] == 0.0
    assert doc["models"]["content"]["cold_targets"]["recall@10"] > 0.0  # text reaches them
    assert "| content |" in (d / "cold" / "results.md").read_text()
    small = ["--set", "max_len=20", "--set", "dim=16", "--set", "epochs=6", "--set", "eval_every=3"]
    res = run(
        "benchmark",
        "--db",
        db,
        "--models",
        "sasrec-ce",
        "--protocol",
        "new-users",
        "--holdout",
        0.34,
        "--out",
        d / "new",
        *small,
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((d / "new" / "results.json").read_text())
    assert doc["model"] == "sasrec-ce" and doc["tune_users"] + doc["test_users"] == round(
        0.34 * 120
    )
    assert set(doc["curve"]) == {"0", "1", "2", "5"} and "sentence" in doc
    md = (d / "new" / "results.md").read_text()
    assert "| a sentence |" in md and "Training: epochs exhausted (6)." in md


def test_max_minutes_is_an_opt_in_budget_that_stops_mid_epoch(store):
    """`--max-minutes N` is `--set max_minutes=N` for the models trained by epochs: without
    it they train to their epochs or early stopping; with it the batches stop at the
    budget and the model is still validated and saved. Models without epochs refuse it."""
    d, db = store
    tiny = ["--set", "dim=16", "--set", "max_len=20", "--set", "epochs=500"]
    res = run("train", "sasrec-ce", "--db", db, "--out", d / "bud", "--max-minutes", 0.0002, *tiny)
    assert res.exit_code == 0, res.output
    cfg = json.loads((d / "bud" / "config.json").read_text())
    assert cfg["config"]["max_minutes"] == 0.0002
    log = cfg["meta"]["train_log"]
    assert cfg["meta"]["stopped_by"] == "time budget" and len(log) < 500
    assert "valid_ndcg@10" in log[-1]  # validated where it stopped (mid-epoch: test_sasrec)
    res = run("train", "ease", "--db", db, "--out", d / "e2", "--max-minutes", 1)
    assert res.exit_code == 2 and "none of ease trains by epochs" in res.output
    assert not (d / "e2").exists()
    res = run(
        "benchmark", "--db", db, "--out", d / "b2", "--models", "pop,ease", "--max-minutes", 1
    )
    assert res.exit_code == 2 and "--max-minutes" in res.output
