"""The one small interface every model shares: fit, score, recommend, save, load.

A model keeps the interactions it was fit on as each user's history: `score(users)` scores
every item for those users, `recommend` turns scores into a top-K without seen items. Users
the model does not know, or who have no history, get the popularity ranking (a documented
fallback, flagged by `Recommender.fallback_users`). Artefacts are `config.json` (typed
config, sizes, id maps) plus `weights.safetensors` (numpy arrays): nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file

from directrec.data.dataset import Catalog, Interactions

FORMAT_VERSION = 1
Validator = Callable[["Recommender"], float]
ID_KEYS = ("user_ids", "item_ids")  # raw ids by index, kept in ids.json beside the config


def csr_to_state(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    m = m.tocsr()
    return {
        f"{prefix}.indptr": m.indptr.astype(np.int64),
        f"{prefix}.indices": m.indices.astype(np.int64),
        f"{prefix}.data": m.data.astype(np.float32),
        f"{prefix}.shape": np.array(m.shape, dtype=np.int64),
    }


def csr_from_state(prefix: str, state: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(x) for x in state[f"{prefix}.shape"])
    return sp.csr_matrix(
        (state[f"{prefix}.data"], state[f"{prefix}.indices"], state[f"{prefix}.indptr"]),
        shape=shape,
    )


class Recommender:
    """Base class. Subclasses define `name`, a `Config` dataclass, `_fit`, `score`, and
    `_state`/`_load_state` for their learned parameters."""

    name: ClassVar[str] = "base"
    needs_text: ClassVar[bool] = False  # True: fit needs catalog embeddings
    # True: the model trains on the training part and stops early on validation, then is
    # evaluated with the validation item added to its history (the SASRec/TIGER protocol).
    uses_validation: ClassVar[bool] = False
    # True: any history can be scored without retraining (`recommend_histories`): sessions,
    # new users, stored users plus live feedback. Per-user factor models cannot.
    supports_histories: ClassVar[bool] = True

    @dataclasses.dataclass
    class Config:
        seed: int = 42

    def __init__(self, config: Any | None = None, **overrides: Any) -> None:
        self.config = config if config is not None else self.Config()
        if overrides:
            self.config = dataclasses.replace(self.config, **overrides)
        self.n_users = 0
        self.n_items = 0
        self.seen: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self.popularity = np.zeros(0, dtype=np.float32)
        self.meta: dict[str, Any] = {}  # id maps, data fingerprint: set by the caller

    # ------------------------------------------------------------------ training
    def fit(
        self,
        data: Interactions,
        catalog: Catalog | None = None,
        validator: Validator | None = None,
    ) -> Self:
        """Learn from `data`; its interactions become each user's history.

        `validator(model) -> float` (higher is better, e.g. validation NDCG@10) lets models
        that train iteratively stop early; others ignore it.
        """
        self.n_users, self.n_items = data.n_users, data.n_items
        self.set_history(data)
        self.popularity = np.asarray(self.seen.sum(0)).ravel().astype(np.float32)
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed)
        self.validator = validator
        try:
            self._fit(data, catalog)
        finally:
            self.validator = None
        return self

    def update(self, data: Interactions, catalog: Catalog | None = None, epochs: int = 3) -> Self:
        """A new model of this kind trained on `data`, whose index extends this model's
        (users/items keep their indices; new ones come after). The default refits from
        scratch (cheap for the classic models); neural models warm-start and train
        `epochs` more epochs (see SASRec)."""
        config = self.config
        if "epochs" in {f.name for f in dataclasses.fields(config)}:
            config = dataclasses.replace(config, epochs=epochs)
        fresh = type(self)(config)
        fresh.meta = dict(self.meta)
        return fresh.fit(data, catalog)

    def set_history(self, data: Interactions) -> Self:
        """Make `data` each user's history (what is scored from and excluded), without
        retraining: e.g. the validation item at test time, or feedback while serving."""
        if data.n_items != self.n_items:
            raise ValueError(f"history has {data.n_items} items, the model {self.n_items}")
        self.n_users = data.n_users
        self.seen = data.matrix("binary")
        self._on_history(data)
        return self

    def history_of(self, user: int) -> np.ndarray:
        """A stored user's history as item indices (oldest first where the model keeps
        order; otherwise by index)."""
        if not 0 <= user < self.n_users:
            return np.zeros(0, dtype=np.int64)
        return self.seen[user].indices.astype(np.int64)

    def _on_history(self, data: Interactions) -> None:
        """Hook: models that keep their own view of histories (sequences) refresh it."""

    def _fit(self, data: Interactions, catalog: Catalog | None) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ inference
    def score(self, users: np.ndarray) -> np.ndarray | torch.Tensor:
        """Scores [len(users), n_items] for known users with history (higher = better)."""
        raise NotImplementedError

    def fallback_users(self, users: np.ndarray) -> np.ndarray:
        """Mask of users the model cannot personalise (unknown index or empty history)."""
        users = np.asarray(users, dtype=np.int64)
        known = (users >= 0) & (users < self.n_users)
        lengths = np.zeros(len(users), dtype=np.int64)
        lengths[known] = np.diff(self.seen.indptr)[users[known]]
        return ~known | (lengths == 0)

    def full_scores(self, users: np.ndarray) -> torch.Tensor:
        """`score` for personalisable users, popularity for the rest."""
        users = np.asarray(users, dtype=np.int64)
        out = torch.empty((len(users), self.n_items), dtype=torch.float32)
        fb = self.fallback_users(users)
        if (~fb).any():
            out[torch.from_numpy(~fb)] = torch.as_tensor(
                self.score(users[~fb]), dtype=torch.float32
            )
        if fb.any():
            out[torch.from_numpy(fb)] = torch.from_numpy(self.popularity).float()
        return out

    def recommend(
        self, users: np.ndarray | list[int], k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` item indices and scores per user, best first. Rows are padded with -1
        (score -inf) when fewer than `k` items are left (k larger than the catalogue)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        users = np.asarray(users, dtype=np.int64)
        scores = self.full_scores(users)
        if exclude_seen:
            mask_seen(scores, self.seen, users)
        return self._top(scores, k)

    def recommend_histories(
        self,
        histories: Sequence[np.ndarray],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` for ad-hoc histories (item indices, oldest first), leaving the model's
        stored histories untouched; `exclude[i]` lists items row i must not get. Empty
        histories get the popularity fallback."""
        if k < 1:
            raise ValueError("k must be at least 1")
        # Generators only write their top `k`: widen by the exclusions the history does not
        # already cover (seen items are never generated in the first place).
        extra = max((len(np.setdiff1d(e, h) if exclude_seen else e)
                     for e, h in zip(exclude or [], histories, strict=False)), default=0)  # fmt: skip
        scores, data = self._history_scores(histories, k + extra)
        users = np.arange(len(histories))
        if exclude_seen:
            mask_seen(scores, data.matrix("binary"), users)
        for row, ex in enumerate(exclude or []):
            if len(ex):
                scores[row, torch.as_tensor(np.asarray(ex, dtype=np.int64))] = -torch.inf
        return self._top(scores, k)

    def score_histories(
        self, histories: Sequence[np.ndarray], k: int | None = None
    ) -> torch.Tensor:
        """Scores [len(histories), n_items] for ad-hoc histories, seen items not masked
        (for explanations: how does a score change when the history changes?). Generators
        score only the best `k` they write (others -inf); None: the whole catalogue."""
        return self._history_scores(histories, k or self.n_items)[0]

    def _history_scores(
        self, histories: Sequence[np.ndarray], k: int
    ) -> tuple[torch.Tensor, Interactions]:
        if not self.supports_histories:
            raise ValueError(f"{self.name} cannot score ad-hoc histories (per-user factors)")
        lengths = [len(h) for h in histories]
        items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories] or [[]])
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError("history items must be indices of the model's catalogue")
        data = Interactions(
            np.repeat(np.arange(len(histories)), lengths), items.astype(np.int64),
            n_users=len(histories), n_items=self.n_items,
        )  # fmt: skip
        saved = dict(self.__dict__)
        try:
            self.set_history(data)
            scores = self._scores_for(np.arange(len(histories)), k)
        finally:  # restore the stored histories whatever happened
            self.__dict__.clear()
            self.__dict__.update(saved)
        return scores, data

    def _scores_for(self, users: np.ndarray, k: int) -> torch.Tensor:
        """Scores good for a top-`k` (generators widen their search to `k`)."""
        return self.full_scores(users)

    def _top(self, scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        kk = min(k, self.n_items)
        top = torch.topk(scores, kk, dim=1)
        items = top.indices.numpy().astype(np.int64)
        vals = top.values.numpy().astype(np.float32)
        items[~np.isfinite(vals)] = -1
        if kk < k:
            pad = k - kk
            items = np.pad(items, ((0, 0), (0, pad)), constant_values=-1)
            vals = np.pad(vals, ((0, 0), (0, pad)), constant_values=-np.inf)
        return items, vals

    # ------------------------------------------------------------------ artefacts
    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def save(self, path: str | Path) -> Path:
        """Write config.json + weights.safetensors atomically (a half-written model never
        appears at `path`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            state = {**csr_to_state("seen", self.seen), "popularity": self.popularity}
            state.update({f"model.{k}": np.ascontiguousarray(v) for k, v in self._state().items()})
            save_file(state, str(tmp / "weights.safetensors"))
            config = {
                "format_version": FORMAT_VERSION,
                "model": self.name,
                "config": dataclasses.asdict(self.config),
                "n_users": self.n_users,
                "n_items": self.n_items,
                "meta": {k: v for k, v in self.meta.items() if k not in ID_KEYS},
            }
            (tmp / "config.json").write_text(json.dumps(config, indent=1, default=_jsonable))
            ids = {k: self.meta[k] for k in ID_KEYS if k in self.meta}
            (tmp / "ids.json").write_text(json.dumps(ids, default=_jsonable))
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a directrec model ({e})") from e
        if config.get("model") != cls.name:
            raise ValueError(f"{path}: holds a {config.get('model')!r} model, not {cls.name!r}")
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported format version {config.get('format_version')}")
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        model = cls(cls.Config(**{k: v for k, v in config["config"].items() if k in fields}))
        model.n_users, model.n_items = config["n_users"], config["n_items"]
        model.meta = config.get("meta", {})
        if (path / "ids.json").exists():
            model.meta.update(json.loads((path / "ids.json").read_text()))
        state = load_file(str(path / "weights.safetensors"))
        model.seen = csr_from_state("seen", state)
        model.popularity = state["popularity"]
        model._load_state({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        return model


class BeamGenerator(Recommender):
    """What the generators that write items by beam search share (semantic-id, llm): each
    user's history kept in order as (indptr, items), and a beam (`config.beam`) that widens
    to `k` when more items are asked for, since only the items written get a score."""

    def _on_history(self, data: Interactions) -> None:
        self.hist_indptr, self.hist_items = data.indptr, data.item.copy()

    def history_of(self, user: int) -> np.ndarray:
        if not 0 <= user < self.n_users:
            return np.zeros(0, dtype=np.int64)
        return self.hist_items[self.hist_indptr[user] : self.hist_indptr[user + 1]]

    def recommend(
        self, users: np.ndarray | list[int], k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        beam = self.config.beam
        self.config = dataclasses.replace(self.config, beam=max(beam, min(k, self.n_items)))
        try:
            return super().recommend(users, k, exclude_seen)
        finally:
            self.config = dataclasses.replace(self.config, beam=beam)

    def _scores_for(self, users: np.ndarray, k: int) -> torch.Tensor:
        beam = self.config.beam
        self.config = dataclasses.replace(self.config, beam=max(beam, min(k, self.n_items)))
        try:
            return self.full_scores(users)
        finally:
            self.config = dataclasses.replace(self.config, beam=beam)


def torch_csr(m: sp.csr_matrix) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (for multi-threaded sparse @ dense)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)),
            size=m.shape,
            check_invariants=False,
        )


def mask_seen(scores: torch.Tensor, seen: sp.csr_matrix, users: np.ndarray) -> None:
    """Set the scores of each user's seen items to -inf, in place (vectorised)."""
    known = (users >= 0) & (users < seen.shape[0])
    if not known.any():
        return
    rows_idx = np.flatnonzero(known)
    sub = seen[users[known]]
    counts = np.diff(sub.indptr)
    r = np.repeat(rows_idx, counts)
    scores[torch.from_numpy(r), torch.from_numpy(sub.indices.astype(np.int64))] = -torch.inf


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
