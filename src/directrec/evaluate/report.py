"""Human-readable reports of a benchmark document: a Markdown table (the best model per
accuracy metric marked, with whether its lead over the runner-up is significant, each value's
interval over seeds, how each model's training stopped, per-history-length tables, and
warnings where a generator loses to popularity or to the best classic model of the run) and
the comparison, training-curve and diversity plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from directrec.evaluate.stats import ALPHA, ranked, ranks_models

# The generative models, by name (results documents may name models this directrec lacks;
# `capabilities.generator` marks only the beam generators, not the SASRec family).
GENERATORS = frozenset({"sasrec", "sasrec-ce", "semantic-id", "llm"})


def is_generator(name: str) -> bool:
    from directrec.models import MODELS

    return name in GENERATORS or (name in MODELS and MODELS[name].capabilities.generator)


def stopped_text(result: dict[str, Any]) -> str:
    """How a model's training ended, from its meta (`stopped_by`, `train_log`,
    `best_epoch`; models/training.loop_meta); "—" for models that do not train by epochs."""
    how, epochs = result.get("stopped_by"), len(result.get("train_log") or [])
    if how == "patience":
        return f"converged at epoch {result.get('best_epoch')}"
    if how == "time budget":
        return f"budget after {epochs} epochs"
    if how == "epochs":
        return f"epochs exhausted ({epochs})"
    return f"{epochs} epochs" if epochs else "—"


def generator_warnings(doc: dict[str, Any]) -> list[str]:
    """A warning for each generator that scores below popularity, or below the best classic
    (non-generator) model of the same run, on NDCG@10 (else NDCG at the first cut-off)."""
    if doc["spec"].get("task", "topn") != "topn":
        return []
    ks = doc["spec"]["ks"]
    key = f"ndcg@{10 if 10 in ks else ks[0]}"
    ok = [r for r in doc["results"] if "error" not in r and key in r.get("metrics", {})]
    classic = [r for r in ok if not is_generator(r["model"])]
    pop = next((r for r in classic if r["model"] == "pop"), None)
    best = max(classic, key=lambda r: r["metrics"][key], default=None)
    notes = []
    for g in (r for r in ok if is_generator(r["model"])):
        mine = g["metrics"][key]
        if pop is not None and mine < pop["metrics"][key]:
            notes.append(
                f"generator {g['model']} scores below popularity: {key.upper()} {mine:.4f} "
                f"against pop's {pop['metrics'][key]:.4f}"
            )
        if best is not None and best is not pop and mine < best["metrics"][key]:
            notes.append(
                f"generator {g['model']} scores below the best classic model, "
                f"{best['model']}: {key.upper()} {mine:.4f} against {best['metrics'][key]:.4f}"
            )
    return notes


def table_columns(doc: dict[str, Any]) -> list[str]:
    """The metric columns of a document's table, in order."""
    spec = doc["spec"]
    if spec["task"] == "rating":
        return ["rmse", "mae"]
    ok = [r for r in doc["results"] if "error" not in r]
    k0 = spec["ks"][0]
    cols = [f"{m}@{k}" for k in spec["ks"] for m in ("hr", "ndcg")]
    cols += [f"{m}@{k0}" for m in ("recall", "mrr", "coverage", "novelty")]
    if ok and f"diversity@{k0}" in ok[0]["metrics"]:
        cols.append(f"diversity@{k0}")
    return cols


def _seeds_text(doc: dict[str, Any]) -> str:
    spec = doc["spec"]
    n = spec.get("seeds", 1)
    if spec.get("seed") is None:  # a saved model, evaluated without fitting
        return ""
    if n > 1:  # the seeds each model ran with (a model's own --set seed moves them)
        ran = {tuple(r["seeds"]) for r in doc.get("results", []) if r.get("seeds")}
        if len(ran) > 1:
            return f", {n} seeds per model (each model's in results.json) (n={n})"
        seeds = next(iter(ran)) if ran else [spec["seed"] + i for i in range(n)]
        return f", seeds {', '.join(map(str, seeds))} (n={n})"
    return f", seed {spec['seed']} (n=1, no interval)"


def _cell(r: dict[str, Any], metric: str, lead: dict[str, Any] | None, best: set[str]) -> str:
    """A metric's value (± its interval over seeds), bold for the best model, † where the
    lead over the runner-up is significant."""
    if metric not in r["metrics"]:
        return "—"
    text = f"{r['metrics'][metric]:.4f}"
    half = (r.get("interval") or {}).get(metric, {}).get("half_width")
    if half is not None:
        text += f" ± {half:.4f}"
    if r["model"] in best:
        text = f"**{text}**"
        if lead is not None and lead.get("significant") and lead["best"] == r["model"]:
            text += " †"
    return text


def _segment_tables(doc: dict[str, Any], ok: list[dict[str, Any]]) -> list[str]:
    """Per-history-length tables (NDCG and HR at the first cut-off): how each model does for
    users with few, some and many items before their target."""
    with_seg = [r for r in ok if r.get("segments")]
    if not with_seg:
        return []
    k0 = doc["spec"]["ks"][0]
    labels = list(with_seg[0]["segments"])
    users = {lab: with_seg[0]["segments"][lab].get("users", 0) for lab in labels}
    lines = []
    for metric in (f"ndcg@{k0}", f"hr@{k0}"):
        head = ["model"] + [f"{lab} items ({users[lab]:,} users)" for lab in labels]
        lines += [
            "",
            f"**{metric.upper()} by history length** (items each user had before the target)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---"] + ["---:"] * len(labels)) + "|",
        ]
        for r in with_seg:
            vals = [
                f"{r['segments'][lab][metric]:.4f}" if metric in r["segments"].get(lab, {}) else "—"
                for lab in labels
            ]
            lines.append(f"| {r['model']} | " + " | ".join(vals) + " |")
    return lines


def _lead_lines(doc: dict[str, Any], leads: dict[str, dict[str, Any]], cols: list[str]) -> list:
    """The legend of the marks, and each best model against its runner-up."""
    spec = doc["spec"]
    n = spec.get("seeds", 1)
    tested = [leads[c] for c in cols if c in leads and "p_value" in leads[c]]
    lines = [
        "",
        "**Bold**: the lowest error."
        if spec["task"] == "rating"
        else "**Bold**: the best model per accuracy metric (coverage, novelty and diversity "
        "describe lists and rank no model).",
    ]
    if tested:
        lines[-1] += (
            f" †: its lead over the runner-up is significant (two-sided paired t-test over "
            f"the {tested[0]['users']:,} evaluated users, p < {ALPHA})."
        )
    else:  # rating errors, or a document written before the tests
        lines[-1] += " No per-user values, so no paired test."
    if n > 1:
        lines[-1] += f" ±: half-width of the Student-t 95 % interval of the mean over {n} seeds" + (
            "; the paired test compares per-user values averaged over seeds." if tested else "."
        )
        if spec["task"] == "rating" and spec["split"] == "random":
            lines[-1] += " Each seed also draws its own random hold-out."
    elif spec.get("seed") is not None:
        lines[-1] += " One seed (n=1): no interval; `--seeds N` runs each model N times."
    if not tested:
        return lines
    lines += [
        "",
        "**Best against runner-up**",
        "",
        "| metric | best | runner-up | difference | t | p | significant |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for t in tested:
        lines.append(
            f"| {t['metric']} | {t['best']} | {t['runner_up']} | {t['difference']:+.4f} | "
            f"{t['statistic']:.2f} | {t['p_value']:.2g} | "
            + ("yes †" if t["significant"] else "no")
            + " |"
        )
    return lines


def _codes_only_table(doc: dict[str, Any], ok: list[dict[str, Any]]) -> list[str]:
    """The semantic-ID hybrids beside their codes alone (same network, no ID head), and
    the share of the hybrid's list slots its trie beam wrote."""
    k = doc["spec"]["ks"][0]
    rows = [r for r in ok if f"codes_only.ndcg@{k}" in r["metrics"]]
    if not rows:
        return []
    lines = [
        "",
        f"**What the codes contribute** (the same network decoding by its semantic codes "
        f"alone: no ID-head proposals, no ID weight, no stages; beam share: the hybrid's "
        f"top-{k} slots its trie beam wrote)",
        "",
        f"| model | hybrid HR@{k} | hybrid NDCG@{k} | codes alone HR@{k} "
        f"| codes alone NDCG@{k} | beam share@{k} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["metrics"]
        lines.append(
            f"| {r['model']} | {m[f'hr@{k}']:.4f} | {m[f'ndcg@{k}']:.4f} "
            f"| {m[f'codes_only.hr@{k}']:.4f} | {m[f'codes_only.ndcg@{k}']:.4f} "
            f"| {m[f'beam_share@{k}']:.1%} |"
        )
    return lines


def markdown_table(doc: dict[str, Any]) -> str:
    """results.md: the main table (best per metric marked), the best-against-runner-up
    tests, the per-history-length tables and the warnings."""
    spec, ds = doc["spec"], doc["dataset"]
    ok = [r for r in doc["results"] if "error" not in r]
    cols = table_columns(doc)
    leads = {c["metric"]: c for c in doc.get("comparisons", [])}
    best: dict[str, set[str]] = {}
    for c in cols:
        order = ranked(ok, c)
        if ranks_models(c) and len(order) > 1:
            top = order[0]["metrics"][c]
            best[c] = {r["model"] for r in order if r["metrics"][c] == top}
    head = ["model", *cols, "fit s", "eval s", "peak MB", "stopped"]
    lines = [
        f"**{Path(ds['db']).stem}** — {ds['users']:,} users, {ds['items']:,} items, "
        f"{ds['interactions']:,} interactions; split `{spec['split']}`"
        + (f", history cap {spec['max_history']}" if spec.get("max_history") else "")
        + f", stage `{spec['stage']}`{_seeds_text(doc)}. {doc['protocol']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|",
    ]
    for r in ok:
        vals = [_cell(r, c, leads.get(c), best.get(c, set())) for c in cols]
        lines.append(
            f"| {r['model']} | "
            + " | ".join(vals)
            + f" | {r['fit_seconds']:.1f} | {r['eval_seconds']:.1f} | {r['peak_rss_mb']:.0f}"
            + f" | {r.get('stopped') or stopped_text(r)} |"
        )
    for r in doc["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | skipped: {r['error']} |")
    if best:
        lines += _lead_lines(doc, leads, cols)
    lines += _codes_only_table(doc, ok)
    lines += _segment_tables(doc, ok)
    warnings = doc["warnings"] if "warnings" in doc else generator_warnings(doc)
    if warnings:
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def plot_comparison(doc: dict[str, Any], path: str | Path) -> None:
    """Bars of the main metrics and fit time per model (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in doc["results"] if "error" not in r]
    if not ok:
        return
    names = [r["model"] for r in ok]
    if doc["spec"]["task"] == "rating":
        panels = ["rmse", "mae"]
    else:
        k = doc["spec"]["ks"][0]
        panels = [f"hr@{k}", f"ndcg@{k}", f"coverage@{k}"]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 3.6))
    for ax, metric in zip(axes, panels, strict=False):
        # error bars: the 95 % interval over seeds, where there is one
        half = [((r.get("interval") or {}).get(metric) or {}).get("half_width") for r in ok]
        yerr = [h or 0.0 for h in half] if any(half) else None
        ax.bar(names, [r["metrics"][metric] for r in ok], yerr=yerr, color="#4C72B0")
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=60)
    axes[-1].bar(names, [r["fit_seconds"] for r in ok], color="#DD8452")
    axes[-1].set_yscale("log")
    axes[-1].set_title("fit seconds (log)")
    axes[-1].tick_params(axis="x", rotation=60)
    fig.suptitle(f"{Path(doc['dataset']['db']).stem}: split {doc['spec']['split']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stop_caption(stopped_by: str | None, best_epoch: int | None, epochs: int) -> str:
    """Why a training run ended, in words: 'stopped by patience after 30 epochs; best epoch 22'."""
    why = {
        "patience": "validation stopped improving (patience)",
        "time budget": "the time budget ran out",
        "epochs": "all epochs ran",
    }.get(stopped_by or "", stopped_by or "unknown")
    best = f"; best epoch {best_epoch}" if best_epoch else ""
    return f"stopped after {epochs} epoch{'s' if epochs != 1 else ''}: {why}{best}"


def plot_training_curve(
    log: list[dict[str, Any]],
    path: str | Path,
    title: str = "",
    stopped_by: str | None = None,
    best_epoch: int | None = None,
) -> str:
    """Training loss per epoch and validation NDCG@10 where measured (PNG), every epoch a
    marked point (a short run is still readable), the best epoch marked, and a caption
    saying why training stopped. Returns the caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not log:
        return ""
    caption = stop_caption(stopped_by, best_epoch, int(log[-1]["epoch"]))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot([r["epoch"] for r in log], [r["loss"] for r in log], "o-", ms=3, color="#4C72B0")
    if best_epoch:
        ax.axvline(best_epoch, color="#999999", ls="--", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="#4C72B0")
    val = [r for r in log if "valid_ndcg@10" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot(
            [r["epoch"] for r in val], [r["valid_ndcg@10"] for r in val], "o-", color="#DD8452"
        )
        ax2.set_ylabel("validation NDCG@10", color="#DD8452")
    ax.set_title(title)
    fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return caption


def plot_diversity(doc: dict[str, Any], path: str | Path) -> bool:
    """NDCG@10 against intra-list diversity, one curve per model over the MMR knob (PNG).
    Returns False when no model has a sweep."""
    sweeps = {r["model"]: r["diversity_sweep"] for r in doc["results"] if r.get("diversity_sweep")}
    if not sweeps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, sweep in sweeps.items():
        x = [p["ild@10"] for p in sweep]
        y = [p["ndcg@10"] for p in sweep]
        ax.plot(x, y, marker="o", label=name)
        for p, xi, yi in zip(sweep, x, y, strict=True):
            ax.annotate(
                f"{p['diversity']:g}",
                (xi, yi),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("intra-list diversity @10 (mean pairwise cosine distance)")
    ax.set_ylabel("NDCG@10")
    ax.set_title("Accuracy–diversity trade-off (MMR knob annotated)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
