"""The canary: a model version builds real lists before anything may serve it.

Every way a version reaches users goes through `check_version` first: the service's
reload and registry watcher, `publish` and `update`. It loads the version (strictly:
every tensor's shape and dtype against what the config implies, ids.json's ids unique
scalars), then runs real histories through the one list pipeline (generate/pipeline.py
`recommend`, as the service builds lists): a fixed sample of stored users, each with their
last item held out, plus an empty and a one-item history. The version is refused unless

- every list is full (k items, or every unseen item when fewer are left), its items are
  valid indices, distinct and not in the history, and every listed score is finite;
- NDCG@10 of the held-out items is not below the reference by more than the tolerance.

The reference, in this order: the canary figure recorded in the version's manifest when
it was published against a store (`manifest.json` "canary": same protocol, same users);
else the model's `best_valid_ndcg@10` from training (early-stopping models validate on
each user's last item with the rest of the history seen, the canary's protocol). Refused
when ndcg < reference x (1 - tolerance) - 2 x the canary's standard error (a small sample
cannot refuse a sound model by chance). With neither figure, or no held-out users, the
quality rule is skipped and the report says so; the list rules always apply.

Without a store (`publish` with no --db) the histories are synthetic, drawn from the
model's own item index (popular items, seeded): they exercise the weights, but there is
no held-out truth, so no NDCG figure is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.data.store import StoreBase, open_store
from directrec.generate.context import ModelContext
from directrec.generate.pipeline import ListOptions, recommend
from directrec.generate.stages import Stages
from directrec.models import load_model
from directrec.models.artifacts import check_ids
from directrec.models.base import Recommender

# Why a version was refused: the label of directrec_version_refused_total.
REASONS = ("integrity", "ids", "load", "error", "scores", "lists", "ndcg")


log = logging.getLogger("directrec.canary")


class Refused(ValueError):
    """A version that must not serve: `reason` is one of REASONS, the message says why
    (with no absolute paths of this machine: it goes into HTTP bodies)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CanaryConfig:
    users: int = 100  # stored users sampled: the first this many in ingest order
    k: int = 10
    tolerance: float = 0.2  # share of the reference NDCG@10 a version may fall below it
    batch: int = 64  # histories per model call
    seed: int = 0  # synthetic histories (no store)


@dataclass
class CanaryReport:
    lists: int  # lists built and checked
    users: int  # held-out users NDCG@10 was measured on
    ndcg: float | None
    se: float | None  # its standard error over users
    reference: float | None
    reference_from: str  # where the reference came from ("" = none)
    seconds: float

    def record(self) -> dict[str, Any]:
        """What `publish` writes into the manifest (the next canary's reference)."""
        return {
            "ndcg@10": self.ndcg,
            "users": self.users,
            "lists": self.lists,
            "protocol": "leave-last-out over the store's first users (serve/canary.py)",
        }


def check_version(
    version_dir: str | Path,
    db: str | Path | None,
    cfg: CanaryConfig = CanaryConfig(),
    label: str = "",
    context: Callable[[Recommender], ModelContext] | None = None,
) -> tuple[ModelContext, CanaryReport]:
    """Load the model in `version_dir` and run the canary on `db`'s users (None: synthetic
    histories). Returns the context to serve and the report, or raises Refused.
    `context(model) -> ModelContext` builds the context (default: from `db`'s catalogue),
    so the service can align the model with the catalogue it already holds."""
    version_dir = Path(version_dir)
    label = label or version_dir.name
    try:
        ids = version_dir / "ids.json"
        if ids.exists():
            try:
                check_ids(json.loads(ids.read_text()))
            except json.JSONDecodeError as e:
                raise ValueError(f"ids.json: not JSON ({e})") from e
    except ValueError as e:
        raise Refused("ids", clean_paths(str(e), version_dir, label)) from e
    try:
        model = load_model(version_dir)
    except Exception as e:  # shapes, dtypes, config: nothing of it is used
        raise Refused("load", clean_paths(str(e), version_dir, label)) from e
    try:
        stages = Stages.read(version_dir)
    except Exception as e:  # an unknown stage or field: the version is not what was fitted
        raise Refused("load", clean_paths(str(e), version_dir, label)) from e
    try:
        ctx = context(model) if context is not None else ModelContext.build(model, db)
    except Exception as e:
        raise Refused("ids", clean_paths(str(e), version_dir, label)) from e
    ctx = dataclasses.replace(ctx, stages=stages)
    manifest = _manifest(version_dir)
    report = run_canary(ctx, db, cfg, reference(manifest, model.meta))
    return ctx, report


def reference(manifest: dict | None, meta: dict) -> tuple[float, str] | None:
    """The NDCG@10 a version's canary is held to (see the module doc), or None."""
    recorded = (manifest or {}).get("canary") or {}
    if isinstance(recorded.get("ndcg@10"), int | float):
        return float(recorded["ndcg@10"]), "the canary figure recorded at publish"
    if isinstance(meta.get("best_valid_ndcg@10"), int | float):
        return float(meta["best_valid_ndcg@10"]), "best_valid_ndcg@10 from training"
    return None


def run_canary(
    ctx: ModelContext,
    db: str | Path | StoreBase | None,
    cfg: CanaryConfig = CanaryConfig(),
    ref: tuple[float, str] | None = None,
) -> CanaryReport:
    """Build lists for the sampled histories and check them (module doc); raises Refused."""
    t0 = time.perf_counter()
    model, n = ctx.model, ctx.model.n_items
    seqs, users, targets = _histories(ctx, db, cfg)
    top = np.argsort(-model.popularity, kind="stable")[:1] if n else np.zeros(0, np.int64)
    seqs += [np.zeros(0, np.int64), top.astype(np.int64)]  # an empty and a one-item history
    users += [-1, -1]
    hits: list[float] = []
    for start in range(0, len(seqs), cfg.batch):
        rows = range(start, min(start + cfg.batch, len(seqs)))
        hist = Histories.from_lists([seqs[r] for r in rows], n, np.array([users[r] for r in rows]))
        try:
            lists = recommend(model, hist, ListOptions(k=cfg.k), info=ctx.info, stages=ctx.stages)
        except Exception as e:  # whatever the model raises would fail every request
            log.warning("canary: building lists failed", exc_info=e)  # the text, server-side
            raise Refused("error", f"building lists failed ({type(e).__name__})") from e
        for j, (r, rec) in enumerate(zip(rows, lists, strict=True)):
            _check_list(model, hist, j, rec.items, rec.scores, cfg.k)
            if r < len(targets):
                hit = np.flatnonzero(rec.items[:10] == targets[r])
                hits.append(1.0 / math.log2(hit[0] + 2) if len(hit) else 0.0)
    ndcg = se = None
    if hits:
        ndcg = float(np.mean(hits))
        se = float(np.std(hits) / math.sqrt(len(hits)))
        if ref is not None:
            floor = ref[0] * (1 - cfg.tolerance) - 2 * se
            if ndcg < floor:
                raise Refused(
                    "ndcg",
                    f"canary NDCG@10 {ndcg:.4f} on {len(hits)} users' last items is below "
                    f"{floor:.4f}: {ref[1]} {ref[0]:.4f} less {100 * cfg.tolerance:g}% and "
                    f"2 standard errors ({se:.4f})",
                )
    return CanaryReport(
        len(seqs),
        len(hits),
        ndcg,
        se,
        ref[0] if ref else None,
        ref[1] if ref else "",
        round(time.perf_counter() - t0, 3),
    )


def _histories(
    ctx: ModelContext, db: str | Path | StoreBase | None, cfg: CanaryConfig
) -> tuple[list[np.ndarray], list[int], list[int]]:
    """(histories in the model's index, user indices, held-out targets): the first
    `cfg.users` stored users whose last item the model knows, that item held out; or
    synthetic histories from the model's popular items when there is no store."""
    n = ctx.model.n_items
    if db is None:
        rng = np.random.default_rng(cfg.seed)
        p = ctx.model.popularity.astype(np.float64) + 1.0
        sizes = rng.integers(2, min(20, max(n, 2)) + 1, size=cfg.users)
        seqs = [rng.choice(n, size=min(s, n), replace=False, p=p / p.sum()) for s in sizes]
        return [s.astype(np.int64) for s in seqs], [-1] * len(seqs), []
    if isinstance(db, StoreBase):
        raw_users, stored = _read(db, cfg.users)
    else:
        with open_store(db) as store:
            raw_users, stored = _read(store, cfg.users)
    seqs, users, targets = [], [], []
    user_idx = ctx.users.indices(raw_users) if raw_users else np.zeros(0, np.int64)
    for u, raw in enumerate(raw_users):
        idx = ctx.items.indices(stored.get(raw, []))
        idx = idx[idx >= 0]
        if len(idx) < 2:
            continue
        seqs.append(idx[:-1].astype(np.int64))
        users.append(int(user_idx[u]))
        targets.append(int(idx[-1]))
    return seqs, users, targets


def _read(store: StoreBase, n: int) -> tuple[list[str], dict[str, list[str]]]:
    users = store.user_ids(n)
    return users, store.histories(users)


def _check_list(
    model: Recommender, hist: Histories, row: int, items: np.ndarray, scores: np.ndarray, k: int
) -> None:
    n = model.n_items
    seen = np.unique(hist[row])
    if len(items) and (items.min() < 0 or items.max() >= n):
        raise Refused("lists", f"a list holds item indices outside 0..{n - 1}")
    if len(np.unique(items)) != len(items):
        raise Refused("lists", "a list repeats an item")
    if np.isin(items, seen).any():
        raise Refused("lists", "a list holds items from its own history")
    if not np.isfinite(np.asarray(scores, dtype=np.float64)).all():
        raise Refused("scores", "a listed item has a non-finite score")
    want = min(k, n - len(seen))
    if len(items) < want:
        raw = model.score(hist.take([row]))
        if torch.isnan(raw).any() or torch.isposinf(raw).any():
            raise Refused(
                "scores",
                f"the model scores {int(torch.isnan(raw).sum())} of {n} items NaN "
                f"(and {int(torch.isposinf(raw).sum())} +inf) for a history of {len(hist[row])}",
            )
        raise Refused(
            "lists",
            f"a list for a history of {len(hist[row])} items holds {len(items)} items, not {want}",
        )


def _manifest(version_dir: Path) -> dict | None:
    f = version_dir / "manifest.json"
    try:
        return json.loads(f.read_text()) if f.exists() else None
    except (OSError, ValueError):
        return None


def clean_paths(message: str, version_dir: Path, label: str) -> str:
    """A message without this machine's paths: `version_dir` (a version, or the registry)
    becomes `label`."""
    for p in (version_dir.resolve(), version_dir.absolute(), version_dir):
        message = message.replace(f"{p}/", f"{label}/").replace(str(p), label)
    return message
