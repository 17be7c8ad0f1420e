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


def test_the_table_marks_the_leader_its_significance_and_the_interval():
    d = doc(result("pop", 0.02), result("ease", 0.09), result("itemknn", 0.07))
    d["spec"]["seeds"] = 3
    d["results"][1]["interval"] = {"ndcg@10": {"mean": 0.09, "n": 3, "half_width": 0.0123}}
    d["comparisons"] = [
        {"metric": "ndcg@10", "best": "ease", "runner_up": "itemknn", "difference": 0.02,
         "statistic": 3.1, "p_value": 0.002, "users": 10, "significant": True},
        {"metric": "hr@10", "best": "ease", "runner_up": "itemknn", "difference": 0.04,
         "statistic": 1.2, "p_value": 0.3, "users": 10, "significant": False},
    ]  # fmt: skip
    md = markdown_table(d)
    assert "seeds 42, 43, 44 (n=3)" in md.splitlines()[0]
    ease = next(x for x in md.splitlines() if x.startswith("| ease |")).split(" | ")
    # hr@10 (bold, lead not significant), ndcg@10 (bold, ± interval, †)
    assert ease[1:5] == ["**0.1800**", "**0.0900 ± 0.0123** †", "**0.2700**", "**0.0900**"]
    pop = next(x for x in md.splitlines() if x.startswith("| pop |"))
    assert "**" not in pop and "†" not in pop
    assert "| ndcg@10 | ease | itemknn | +0.0200 | 3.10 | 0.002 | yes † |" in md
    assert "| hr@10 | ease | itemknn | +0.0400 | 1.20 | 0.3 | no |" in md
    assert "paired t-test over the 10 evaluated users" in md and "over 3 seeds" in md


def test_one_seed_says_n_1_and_segments_reach_the_markdown():
    d = doc(result("pop", 0.02), result("ease", 0.09))
    d["results"][1]["segments"] = {
        "<=5": {"users": 0},
        "6-20": {"users": 7, "ndcg@10": 0.11, "hr@10": 0.3},
        ">20": {"users": 3, "ndcg@10": 0.05, "hr@10": 0.1},
    }
    md = markdown_table(d)
    assert "seed 42 (n=1, no interval)" in md.splitlines()[0] and "±" not in md
    assert "No per-user values, so no paired test." in md and "Best against" not in md
    ndcg = md.split("**NDCG@10 by history length**")[1]
    assert "| model | <=5 items (0 users) | 6-20 items (7 users) | >20 items (3 users) |" in ndcg
    assert "| ease | — | 0.1100 | 0.0500 |" in ndcg
    assert "| ease | — | 0.3000 | 0.1000 |" in md.split("**HR@10 by history length**")[1]
    # one model: no leader to mark
    assert "**" not in markdown_table(doc(result("ease", 0.09))).split("\n", 2)[2]


def test_a_hybrid_is_shown_beside_its_codes_alone_with_the_beam_share():
    sem = result("semantic-id", 0.05)
    sem["metrics"] |= {"codes_only.hr@10": 0.06, "codes_only.ndcg@10": 0.03, "beam_share@10": 0.625}
    md = markdown_table(doc(result("pop", 0.01), sem))
    assert "**What the codes contribute**" in md
    assert "| semantic-id | 0.1000 | 0.0500 | 0.0600 | 0.0300 | 62.5% |" in md
    assert "codes contribute" not in markdown_table(doc(result("pop", 0.01)))
