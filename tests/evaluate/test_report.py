"""Benchmark reports say how each model's training ended and warn when a generator loses
to popularity or to the best classic model of the same run."""

from __future__ import annotations

from directrec.evaluate.report import generator_warnings, markdown_table, stopped_text


def result(model: str, ndcg: float, **extra) -> dict:
    return {
        "model": model,
        "metrics": {"hr@10": 2 * ndcg, "ndcg@10": ndcg, "hr@20": 3 * ndcg, "ndcg@20": ndcg},
        "fit_seconds": 1.0,
        "eval_seconds": 0.5,
        "peak_rss_mb": 100.0,
        **extra,
    }


def doc(*results: dict, ks=(10, 20)) -> dict:
    return {
        "spec": {"task": "topn", "ks": list(ks), "split": "loo", "stage": "test", "seed": 42},
        "dataset": {"db": "x.duckdb", "users": 10, "items": 5, "interactions": 50},
        "protocol": "full ranking",
        "results": list(results),
    }


def log(n: int) -> list[dict]:
    return [{"epoch": e + 1, "loss": 1.0} for e in range(n)]


def test_how_training_stopped():
    assert stopped_text({"stopped_by": "patience", "best_epoch": 12, "train_log": log(20)}) == (
        "converged at epoch 12"
    )
    assert stopped_text({"stopped_by": "time budget", "best_epoch": 6, "train_log": log(7)}) == (
        "budget after 7 epochs"
    )
    assert stopped_text({"stopped_by": "epochs", "best_epoch": 4, "train_log": log(4)}) == (
        "epochs exhausted (4)"
    )
    assert stopped_text({"model": "ease"}) == "—"


def test_a_generator_below_pop_and_the_best_classic_is_named_with_figures():
    d = doc(
        result("pop", 0.05),
        result("ease", 0.09),
        result("itemknn", 0.07),
        result("sasrec-ce", 0.04, stopped_by="epochs", train_log=log(1), best_epoch=1),
        result("semantic-id", 0.08, stopped_by="patience", train_log=log(9), best_epoch=5),
    )
    w = generator_warnings(d)
    assert w == [
        "generator sasrec-ce scores below popularity: NDCG@10 0.0400 against pop's 0.0500",
        "generator sasrec-ce scores below the best classic model, ease: NDCG@10 0.0400 "
        "against 0.0900",
        "generator semantic-id scores below the best classic model, ease: NDCG@10 0.0800 "
        "against 0.0900",
    ]
    md = markdown_table(d)
    assert "| stopped |" in md.splitlines()[2]
    rows = [x for x in md.splitlines() if x.endswith("| — |")]  # no epochs: no stop to say
    assert [x.split(" | ")[0] for x in rows] == ["| pop", "| ease", "| itemknn"]
    assert "| epochs exhausted (1) |" in md and "| converged at epoch 5 |" in md
    tail = md.split("**Warnings**")[1]
    assert all(f"- {x}" in tail for x in w)


def test_no_warning_when_generators_win_and_first_cutoff_otherwise():
    d = doc(result("pop", 0.05), result("ease", 0.09), result("sasrec-ce", 0.10))
    assert generator_warnings(d) == []
    assert "Warnings" not in markdown_table(d)
    # popularity is the best classic model: one warning, not two
    d = doc(result("pop", 0.05), result("sasrec-ce", 0.04), ks=(5,))
    for r in d["results"]:
        r["metrics"] = {"ndcg@5": r["metrics"]["ndcg@10"], "hr@5": r["metrics"]["hr@10"]}
    assert generator_warnings(d) == [
        "generator sasrec-ce scores below popularity: NDCG@5 0.0400 against pop's 0.0500"
    ]
    # skipped models and rating runs are not compared
    d = doc(result("pop", 0.05), {"model": "semantic-id", "error": "needs item text"})
    assert generator_warnings(d) == []
    d["spec"]["task"] = "rating"
    assert generator_warnings(d) == []
