"""Human-readable reports of a benchmark document: a Markdown table (with how each model's
training stopped, and warnings where a generator loses to popularity or to the best classic
model of the run) and the comparison, training-curve and diversity plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def markdown_table(doc: dict[str, Any]) -> str:
    spec, ds = doc["spec"], doc["dataset"]
    ok = [r for r in doc["results"] if "error" not in r]
    if spec["task"] == "rating":
        cols = ["rmse", "mae"]
    else:
        cols = [f"{m}@{k}" for k in spec["ks"] for m in ("hr", "ndcg")]
        cols += [f"{m}@{spec['ks'][0]}" for m in ("recall", "mrr", "coverage", "novelty")]
        if ok and f"diversity@{spec['ks'][0]}" in ok[0]["metrics"]:
            cols.append(f"diversity@{spec['ks'][0]}")
    head = ["model", *cols, "fit s", "eval s", "peak MB", "stopped"]
    lines = [
        f"**{Path(ds['db']).stem}** — {ds['users']:,} users, {ds['items']:,} items, "
        f"{ds['interactions']:,} interactions; split `{spec['split']}`"
        + (f", history cap {spec['max_history']}" if spec.get("max_history") else "")
        + f", stage `{spec['stage']}`, seed {spec['seed']}. {doc['protocol']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|",
    ]
    for r in ok:
        m = r["metrics"]
        vals = [f"{m[c]:.4f}" if c in m else "—" for c in cols]
        lines.append(
            f"| {r['model']} | "
            + " | ".join(vals)
            + f" | {r['fit_seconds']:.1f} | {r['eval_seconds']:.1f} | {r['peak_rss_mb']:.0f}"
            + f" | {r.get('stopped') or stopped_text(r)} |"
        )
    for r in doc["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | skipped: {r['error']} |")
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
        ax.bar(names, [r["metrics"][metric] for r in ok], color="#4C72B0")
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
