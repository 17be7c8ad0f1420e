"""What is learned after the model: typed pipeline stages, fitted on held-out data by
`directrec train` (as a recipe's `[stages]` names them) and applied by the one pipeline
(generate/pipeline.py) for every caller alike: CLI, evaluation, batch generation, service.

- `PriorBlend`: short histories say little, so rows of length L mix popularity into the
  model's distribution with a weight learned per length (`coldstart.fit_prior_blend`).
- `QueryBlend`: a sentence-only request mixes a text-tilted popularity prior into the list
  (`coldstart.fit_query_blend`).
- `ColdGate`: items the generator never trained on (cold items) enter a semantic-ID
  model's lists through a gate learned on validation cases (`coldstart.fit_cold_gate`).
- `Diversify`: MMR re-ranking of each list's candidates with the weight chosen on
  validation cases: the largest that keeps a set share of the list's NDCG@10
  (`fitting.fit_diversify`). A request's own `diversity` overrides it.

A model's own decoding settings (beam width, the ID-head weight of the semantic-ID hybrid)
are the model's config, chosen on validation while it is fit, not stages.

The stages of a model are saved beside it as `stages.json` (with the tables their fit
produced) and read back by `Stages.read`; an unknown stage or field there is an error.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.models.base import Recommender
from directrec.models.candidates import Candidates

STAGES_FILE = "stages.json"


def prior_weights(
    lengths: np.ndarray, table: tuple[int, ...], alpha: tuple[float, ...]
) -> np.ndarray:
    """The popularity weight per history length: the entry of the longest tabled length
    ≤ L; 0 beyond the table (and for length 0, which the model's fallback covers)."""
    t = np.asarray(table, dtype=np.int64)
    a = np.asarray(alpha, dtype=np.float64)
    idx = np.searchsorted(t, lengths, side="right") - 1
    inside = (idx >= 0) & (lengths <= t[-1])
    return np.where(inside, a[np.clip(idx, 0, None)], 0.0)


@dataclass(frozen=True)
class PriorBlend:
    """Rows of history length L get log((1 − a_L) p_model + a_L p_pop)."""

    lengths: tuple[int, ...]
    alpha: tuple[float, ...]
    name: ClassVar[str] = "prior_blend"

    def __post_init__(self) -> None:
        if len(self.lengths) != len(self.alpha) or not self.lengths:
            raise ValueError("prior_blend: one weight per tabled length, at least one")
        if list(self.lengths) != sorted(set(self.lengths)) or self.lengths[0] < 1:
            raise ValueError("prior_blend: lengths must be increasing and ≥ 1")
        if any(not 0.0 <= a <= 1.0 for a in self.alpha):
            raise ValueError("prior_blend: weights must lie in [0, 1]")

    def apply(self, scores: torch.Tensor, lengths: np.ndarray, popularity: np.ndarray) -> None:
        """In place on `scores` [B, n_items]; `lengths` 0 marks rows left alone (fallback)."""
        alpha = prior_weights(lengths, self.lengths, self.alpha) * (lengths > 0)
        rows = np.flatnonzero(alpha > 0)
        if not len(rows):
            return
        r = torch.from_numpy(rows)
        a = torch.from_numpy(alpha[rows]).float()[:, None]
        pop = torch.from_numpy(popularity).float()
        pop = pop / pop.sum().clamp(min=1e-12)
        p = torch.softmax(scores[r].float(), dim=1)
        scores[r] = torch.log((1 - a) * p + a * pop + 1e-30)


@dataclass(frozen=True)
class QueryBlend:
    """Sentence-only rows mix in p_i ∝ (pop_i + 1) · exp(t · s_i) with weight `alpha`; s
    mixes text and category cosines with category weight `w` (coldstart.query_similarities)."""

    alpha: float
    t: float
    w: float = 0.0
    name: ClassVar[str] = "query_blend"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0 or not 0.0 <= self.w <= 1.0 or self.t < 0:
            raise ValueError("query_blend: alpha and w in [0, 1], t ≥ 0")

    def apply(
        self, scores: torch.Tensor, rows: np.ndarray, sims: np.ndarray, popularity: np.ndarray
    ) -> None:
        """In place on `scores[rows]`; `sims` [len(rows), n_items] are the cosines of the
        items to each row's sentence."""
        if self.alpha <= 0.0 or not len(rows):
            return
        r = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        log_p = torch.log_softmax(scores[r].float(), dim=1)
        prior = query_log_prior(torch.as_tensor(sims, dtype=torch.float32), popularity, self.t)
        scores[r] = mix_log(log_p, prior, self.alpha)


def query_log_prior(sims: torch.Tensor, popularity: np.ndarray, temperature: float) -> torch.Tensor:
    """log p_i ∝ log(pop_i + 1) + t · s_i, per row of `sims` [R, n_items]."""
    logits = torch.log1p(torch.from_numpy(popularity).float())[None, :] + temperature * sims
    return torch.log_softmax(logits, dim=1)


def mix_log(log_p: torch.Tensor, log_prior: torch.Tensor, alpha: float) -> torch.Tensor:
    """log((1 - a) p + a prior), stable in log space (a = 0 or 1 exactly: one side)."""
    if alpha <= 0.0:
        return log_p
    if alpha >= 1.0:
        return log_prior
    return torch.logaddexp(log_p + float(np.log1p(-alpha)), log_prior + float(np.log(alpha)))


@dataclass(frozen=True)
class ColdGate:
    """How cold items enter a semantic-ID model's list (`fit_cold_gate` explains both
    families): `score` gives a cold item `bias + scale · similarity` against the beam's
    log-probabilities; `place` reserves ranks from `rank` on for cold items whose
    similarity clears `threshold`. At most `slots` cold items (a user's best-matching) enter."""

    mode: str
    view: str
    mix: float
    slots: int
    scale: float = 1.0
    bias: float = 0.0
    threshold: float = 0.0
    rank: int = 0
    name: ClassVar[str] = "cold_gate"

    def __post_init__(self) -> None:
        if self.mode not in ("score", "place"):
            raise ValueError(f"cold_gate: mode must be score or place, not {self.mode!r}")
        if self.view not in ("latent", "text", "id"):
            raise ValueError(f"cold_gate: view must be latent, text or id, not {self.view!r}")
        if self.slots < 1 or self.rank < 0:
            raise ValueError("cold_gate: slots ≥ 1 and rank ≥ 0")

    def apply(self, model: Recommender, histories: Histories, scores: torch.Tensor) -> None:
        """In place: every cold item's score is set by the gate (-inf where it is not
        admitted), from the generated list each row already holds (its finite scores).
        Rows the model cannot personalise (the popularity fallback) are left alone."""
        cold = model.cold_items()  # type: ignore[attr-defined]
        rows = np.flatnonzero(~model.fallback(histories))
        if not len(cold) or not len(rows):
            return
        if len(rows) < len(histories):
            part = scores[torch.from_numpy(rows)]
            self.apply(model, histories.take(rows), part)
            scores[torch.from_numpy(rows)] = part
            return
        width = int(torch.isfinite(scores).sum(1).max())
        top = torch.topk(scores, max(width, 1), dim=1)
        items = torch.where(torch.isfinite(top.values), top.indices, -1)
        logp = top.values
        id_cold = model.cold_id_logp(histories) if self.view == "id" else None  # type: ignore[attr-defined]
        sims = model.cold_similarity(  # type: ignore[attr-defined]
            histories, items, logp, mix=self.mix, view=self.view, id_cold=id_cold
        )
        slots = min(self.slots, len(cold))
        keep = torch.topk(sims, slots, dim=1).indices
        if self.mode == "place":
            out = self._placed(items, logp, cold, sims, keep)
        else:
            gated = self.bias + self.scale * sims
            out = torch.full_like(gated, -torch.inf).scatter(1, keep, gated.gather(1, keep))
        scores[:, torch.from_numpy(cold)] = out

    def _placed(
        self,
        items: torch.Tensor,
        logp: torch.Tensor,
        cold: np.ndarray,
        sims: torch.Tensor,
        keep: torch.Tensor,
    ) -> torch.Tensor:
        """Scores [B, n_cold] that put a row's admitted cold items (`keep`, best first,
        similarity ≥ threshold) at ranks rank, rank + 1, … of its generated list: between
        the warm items generated at ranks rank − 1 and rank (-inf where not admitted)."""
        place, slots = self.rank, keep.shape[1]
        warm = (items >= 0) & ~torch.from_numpy(np.isin(items.numpy(), cold))
        ranked = torch.where(warm, logp.float(), -torch.inf).sort(1, descending=True).values
        ranked = torch.cat([ranked, torch.full((len(items), place + 1), -torch.inf)], 1)
        n = warm.sum(1)  # a row with fewer warm items than `rank` gets its cold ones last
        lo = ranked[:, place]  # the warm item the slot goes above (-inf: none)
        above = (torch.clamp(n, max=place) - 1).clamp(min=0)  # the warm item it goes below
        hi = lo + 1.0 if place == 0 else ranked.gather(1, above[:, None]).squeeze(1)
        hi = torch.where(n > 0, hi, torch.zeros_like(hi))  # no warm items at all
        lo = torch.where(torch.isfinite(lo), lo, hi - 1.0)
        # the j-th best admitted cold item sits at (slots - j) / (slots + 1) of the gap
        frac = (slots - torch.arange(slots)) / (slots + 1)
        placed = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
        placed = torch.where(sims.gather(1, keep) >= self.threshold, placed, -torch.inf)
        return torch.full_like(sims, -torch.inf).scatter(1, keep, placed)


@dataclass(frozen=True)
class Diversify:
    """MMR over each row's best `pool_factor` × k candidates with weight `weight`
    (generate/rerank.py: 0 keeps the model's order)."""

    weight: float
    pool_factor: int = 5
    name: ClassVar[str] = "diversify"

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight < 1.0:
            raise ValueError(f"diversify: weight must lie in [0, 1), not {self.weight}")
        if self.pool_factor < 1:
            raise ValueError("diversify: pool_factor must be at least 1")

    def rerank(self, found: Candidates, vectors: np.ndarray, k: int) -> Candidates:
        """Each row's MMR list of `k` from its best `pool_factor` × k candidates, then the
        rest of its candidates in their order: what evaluation ranks (`recommend` runs MMR
        on the same pool itself)."""
        if self.weight <= 0.0:
            return found
        from directrec.generate.rerank import mmr

        pool = k * self.pool_factor
        items = torch.full_like(found.items, -1)
        for r in range(len(found)):
            cand = found.items[r].numpy()
            head, vals = cand[:pool], found.scores[r, :pool].numpy()
            ok = head >= 0
            picked, _ = mmr(head[ok], vals[ok], vectors, k, self.weight)
            rest = cand[(cand >= 0) & ~np.isin(cand, picked)]
            order = np.concatenate([picked, rest]).astype(np.int64)
            items[r, : len(order)] = torch.from_numpy(order)
        ladder = torch.arange(found.width, 0, -1, dtype=torch.float32).expand(len(found), -1)
        return Candidates(items, torch.where(items >= 0, ladder, -torch.inf))


STAGE_TYPES: dict[str, type] = {t.name: t for t in (PriorBlend, QueryBlend, ColdGate, Diversify)}


@dataclass(frozen=True)
class Stages:
    """The fitted stages of one model (None: not fitted) and what each fit measured."""

    prior_blend: PriorBlend | None = None
    query_blend: QueryBlend | None = None
    cold_gate: ColdGate | None = None
    diversify: Diversify | None = None
    fits: dict[str, Any] = field(default_factory=dict, compare=False)

    def fitted(self) -> list[str]:
        return [n for n in STAGE_TYPES if getattr(self, n) is not None]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in self.fitted():
            out[n] = dataclasses.asdict(getattr(self, n))
        return {"stages": out, "fits": self.fits}

    @classmethod
    def from_dict(cls, doc: Any, where: str = STAGES_FILE) -> Stages:
        if not isinstance(doc, dict) or not isinstance(doc.get("stages", {}), dict):
            raise ValueError(f"{where}: expected an object with a 'stages' object")
        made: dict[str, Any] = {}
        for n, values in doc.get("stages", {}).items():
            if n not in STAGE_TYPES:
                raise ValueError(f"{where}: unknown stage {n!r} (have {', '.join(STAGE_TYPES)})")
            kind = STAGE_TYPES[n]
            names = {f.name for f in dataclasses.fields(kind)}
            if not isinstance(values, dict) or set(values) - names:
                raise ValueError(f"{where}: stage {n!r} takes fields {', '.join(sorted(names))}")
            try:
                made[n] = kind(
                    **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
                )
            except (TypeError, ValueError) as e:  # a missing field, or a value out of range
                raise ValueError(f"{where}: stage {n!r}: {e}") from e
        return cls(**made, fits=dict(doc.get("fits", {})))

    def files(self) -> dict[str, str]:
        """What `Recommender.save(path, extra=...)` writes for these stages (nothing when
        none is fitted), inside the model directory's one atomic rename."""
        if not self.fitted() and not self.fits:
            return {}
        return {STAGES_FILE: json.dumps(self.to_dict(), indent=1)}

    @classmethod
    def read(cls, model_dir: str | Path) -> Stages:
        """The stages saved with a model (none fitted when the directory has no file)."""
        path = Path(model_dir) / STAGES_FILE
        if not path.exists():
            return cls()
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(doc, str(path))

    # ---------------------------------------------------------------- application
    def apply_scores(
        self,
        model: Recommender,
        histories: Histories,
        scores: torch.Tensor,
        query_rows: np.ndarray | None = None,
        query_sims: np.ndarray | None = None,
    ) -> None:
        """Every fitted stage that changes scores, in the pipeline's order, in place:
        the cold gate (generated list → cold items), the prior by history length, the
        query prior on sentence rows."""
        if self.cold_gate is not None and model.capabilities.cold_items:
            self.cold_gate.apply(model, histories, scores)
        if self.prior_blend is not None:
            ok = ~model.fallback(histories)
            self.prior_blend.apply(scores, histories.lengths() * ok, model.popularity)
        if self.query_blend is not None and query_rows is not None and len(query_rows):
            self.query_blend.apply(scores, query_rows, query_sims, model.popularity)  # type: ignore[arg-type]

    def changes_scores(self, model: Recommender, queries: bool = False) -> bool:
        """Whether a fitted stage changes `model`'s scores (`queries`: some rows are
        sentence-only requests), so lists come from its scores through `apply_scores`
        rather than from its own candidates."""
        return (
            (self.cold_gate is not None and model.capabilities.cold_items)
            or self.prior_blend is not None
            or (self.query_blend is not None and queries)
        )

    def pool(self, k: int) -> int:
        """Candidates a top-`k` re-ranking reads from."""
        return k * self.diversify.pool_factor if self.reranks() else k  # type: ignore[union-attr]

    def reranks(self) -> bool:
        return self.diversify is not None and self.diversify.weight > 0.0

    def rerank(self, found: Candidates, vectors: np.ndarray | None, k: int) -> Candidates:
        """The fitted re-ranking (diversify) of each row's candidates for a top-`k`.
        `vectors`: the items' L2-normalised text embeddings in the model's index."""
        if not self.reranks():
            return found
        if vectors is None:
            raise ValueError(
                "this model's diversify stage needs the items' text embeddings "
                "(a catalogue with text)"
            )
        return self.diversify.rerank(found, vectors, k)  # type: ignore[union-attr]


def load_pipeline(path: str | Path) -> tuple[Recommender, Stages]:
    """A saved model and the stages saved with it. Models saved before stages had their
    own file kept them in their metadata: those are read into the same types (and the
    semantic-ID hybrid's ID weight into its decoding setting), so they build the lists
    they built before."""
    from directrec.models import load_model

    model = load_model(path)
    if (Path(path) / STAGES_FILE).exists():
        return model, Stages.read(path)
    return model, _legacy(model, str(Path(path) / "config.json"))


def _legacy(model: Recommender, where: str) -> Stages:
    """The stages an older model kept in its meta (`prior_blend`, `query_blend`,
    `cold_gate`, `id_blend`)."""
    meta, made = model.meta, {}
    if "id_blend" in meta and hasattr(model.config, "id_weight"):
        model.config = dataclasses.replace(model.config, id_weight=float(meta["id_blend"]))
    if meta.get("prior_blend"):
        made["prior_blend"] = meta["prior_blend"]
    if meta.get("query_blend"):
        made["query_blend"] = {"w": 0.0} | meta["query_blend"]
    if meta.get("cold_gate"):
        gate = {k: v for k, v in meta["cold_gate"].items() if k != "head"}
        made["cold_gate"] = {"view": "latent", "mode": "score"} | gate
    return Stages.from_dict({"stages": made}, f"{where} (meta)") if made else Stages()
