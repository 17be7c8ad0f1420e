"""The one small interface every model shares: fit, score, update, save, load.

A fitted model holds what it learned (weights, item statistics) and nothing per user. To
score, the caller passes the users' `Histories` (see data/histories.py); the model returns
its best items for each row (`top`: `Candidates`, what a generator writes) or a score for
every item (`score`). Rows it cannot personalise (an empty history, or for models with
per-user factors a user it was not fit on) get the popularity ranking, a documented
fallback (`fallback`). Which items a caller excludes is an argument of `top`; fitted
stages, filters, diversity and explanations are not the model's business:
generate/pipeline.py does them, for every caller alike.

Nothing here mutates the model after `fit`, so one model object may serve many threads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.artifacts import check_state, config_from_dict, read_dir, write_dir
from directrec.models.candidates import Candidates, mask_rows
from directrec.models.settings import (
    RUN_FIELDS,
    ModelConfig,
    RunSettings,
    TrainConfig,
    setting_help,
    setting_parts,
)
from directrec.models.transformer import resolve_device

Validator = Callable[["Recommender"], float]


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, declared once per class (the only place callers look)."""

    needs_text: bool = False  # fit needs item text embeddings (catalog.embeddings)
    # Trains on the training part and stops early on validation, then scores with the
    # validation item in the history (the SASRec/TIGER protocol; evaluate/protocol.py).
    early_stopping: bool = False
    # "history": any history can be scored (sessions, new users, live feedback);
    # "user": per-user factors, so only users the model was fit on are personalised.
    personalises: str = "history"
    warm_start: bool = False  # `update` continues from the learned weights
    generator: bool = False  # writes only its top-k items (the rest score -inf)
    rating: bool = False  # predicts explicit ratings (`predict`, the rating task)
    cold_items: bool = False  # `add_items`: new text-only items become generable, no retraining
    reads_requests: bool = False  # a free-text request goes into the model itself (LM prompt)


class Recommender:
    """Base class. Subclasses set `name`, `capabilities` and a `Config` dataclass, and
    implement `_fit`, `_score`, and `_state`/`_load_state` for what they learned. A
    `Config` extends `ModelConfig` (the seed) or `TrainConfig` (models trained by epochs)."""

    name: ClassVar[str] = "base"
    summary: ClassVar[str] = ""  # one line: what the model is (`directrec models` lists it)
    capabilities: ClassVar[Capabilities] = Capabilities()

    Config: ClassVar[type] = ModelConfig

    @classmethod
    def setting_help(cls) -> dict[str, str]:
        """Every setting's one-line meaning, by name (declared with `settings.setting`)."""
        return setting_help(cls.Config, RunSettings)

    @classmethod
    def setting_parts(cls) -> dict[str, str]:
        """Every setting's part (network, training, decoding, model, run…), by name."""
        return setting_parts(cls.Config) | {f: "run" for f in RUN_FIELDS}

    @classmethod
    def setting_fields(cls) -> dict[str, dataclasses.Field]:
        """Every setting `--set` and a recipe may name for this model, by name: the fields
        of its config and of `RunSettings` (the field's default gives the type a text
        value converts to)."""
        fields = {f.name: f for f in dataclasses.fields(cls.Config)}
        return fields | {f.name: f for f in dataclasses.fields(RunSettings)}

    def __init__(
        self, config: Any | None = None, run: RunSettings | None = None, **overrides: Any
    ) -> None:
        """`config`: what the model is (saved with it); `run`: how it runs here (device,
        threads, bf16, progress, checkpoint_dir; never saved). `overrides` may name fields
        of either."""
        runs = {k: overrides.pop(k) for k in list(overrides) if k in RUN_FIELDS}
        self.run = dataclasses.replace(run or RunSettings(), **runs)
        self.config = config if config is not None else self.Config()
        if overrides:
            self.config = dataclasses.replace(self.config, **overrides)
        self.n_users = 0  # users of the fit data (the index per-user models know)
        self.n_items = 0
        self.popularity = np.zeros(0, dtype=np.float32)  # training users per item
        self.meta: dict[str, Any] = {}  # id maps, data fingerprint, training log

    # ------------------------------------------------------------------ training
    def fit(
        self,
        data: Interactions,
        catalog: Catalog | None = None,
        validator: Validator | None = None,
    ) -> Self:
        """Learn from `data`. `validator(model) -> float` (higher is better, e.g.
        validation NDCG@10) lets models that train by epochs stop early; others ignore it."""
        self.n_users, self.n_items = data.n_users, data.n_items
        self.popularity = np.asarray(data.matrix("binary").sum(0)).ravel().astype(np.float32)
        self._threads()
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed)
        self._fit(data, catalog, validator)
        return self

    def _threads(self) -> None:
        if self.run.threads > 0:
            torch.set_num_threads(self.run.threads)

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        raise NotImplementedError

    def update(
        self,
        data: Interactions,
        catalog: Catalog | None = None,
        epochs: int = 3,
        validator: Validator | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Self:
        """A new model of this kind fit on `data`, whose index extends this model's (users
        and items keep their indices; new ones come after). Warm-starting models copy what
        they learned, make room for new items (`_grow`) and train `epochs` more epochs
        (`_train`); the others refit (exact for the closed-form and neighbour models, never
        a truncated fit). `settings` change the config for the update: any setting for a
        refit, only training settings for a warm start (the weights fix the network)."""
        settings = dict(settings or {})
        if not self.capabilities.warm_start:
            run = dataclasses.replace(self.run, checkpoint_dir="")  # a checkpoint is per run
            fresh = type(self)(dataclasses.replace(self.config, **settings), run)
            fresh.meta = {k: v for k, v in self.meta.items() if k != "train_log"}
            return fresh.fit(data, catalog, validator)
        fields = {f.name for f in dataclasses.fields(self.config)}
        training = {f.name for f in dataclasses.fields(TrainConfig)}
        fixed = {
            k: (getattr(self.config, k), v)
            for k, v in settings.items()
            if k not in training and getattr(self.config, k, v) != v
        }
        if fixed:
            shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in sorted(fixed.items()))
            raise ValueError(
                f"a warm-started update keeps its parent's network and decoding; these "
                f"settings differ: {shown}. Train a new model for them."
            )
        budget = {"max_minutes": 0.0} if "max_minutes" in fields else {}  # a budget is per run
        settings = {k: v for k, v in settings.items() if k in training}
        new = self._copy(**{**budget, **settings, "epochs": epochs})
        new.run = dataclasses.replace(self.run, checkpoint_dir="")  # so is a checkpoint
        new._grow(data, catalog)
        new._resize(data)
        new._threads()
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed)
        new._train(data, validator)
        return new

    def _grow(self, data: Interactions, catalog: Catalog | None) -> None:
        """Warm start: make room for `data`'s new items (new rows start fresh)."""
        if data.n_items > self.n_items:
            raise ValueError(f"{self.name} cannot take new items without a refit")

    def _train(self, data: Interactions, validator: Validator | None) -> None:
        """Warm start: train `config.epochs` epochs from the current weights."""
        raise NotImplementedError

    def _copy(self, **changes: Any) -> Self:
        """A new object holding a copy of what this model learned (for warm starts), with
        config fields changed by `changes`."""
        new = type(self)(dataclasses.replace(self.config, **changes), self.run)
        new.n_users, new.n_items = self.n_users, self.n_items
        new.popularity = self.popularity.copy()
        new.meta = {k: v for k, v in self.meta.items() if k != "train_log"}
        new._load_state({k: np.array(v, copy=True) for k, v in self._state().items()})
        return new

    def _resize(self, data: Interactions) -> None:
        """Take `data`'s index sizes and popularity (an update's grown index)."""
        if data.n_items < self.n_items or data.n_users < self.n_users:
            raise ValueError("an update may add users and items, not remove them")
        self.n_users, self.n_items = data.n_users, data.n_items
        self.popularity = np.asarray(data.matrix("binary").sum(0)).ravel().astype(np.float32)

    @property
    def device(self) -> torch.device:
        """Where the model computes: its run settings' `device` (auto | cpu | cuda | cuda:N)."""
        return resolve_device(self.run.device)

    # ------------------------------------------------------------------ scoring
    def fallback(self, histories: Histories, requests: Sequence[str] | None = None) -> np.ndarray:
        """Rows the model cannot personalise: an empty history, or (per-user models) a
        user index outside the users it was fit on."""
        empty = histories.lengths() == 0
        if requests is not None and self.capabilities.reads_requests:
            empty &= ~np.array([bool(r) for r in requests], dtype=bool)  # a request suffices
        if self.capabilities.personalises == "user":
            return empty | ~((histories.users >= 0) & (histories.users < self.n_users))
        return empty

    def top(
        self,
        histories: Histories,
        k: int,
        requests: Sequence[str] | None = None,
        exclude: sp.csr_matrix | None = None,
        keep: torch.Tensor | None = None,
    ) -> Candidates:
        """Each row's best `k` items (at least; fewer only where fewer are left), never
        one of its `exclude` items ([len(histories), n_items]; stored entries are
        excluded). Fallback rows get popularity. A generator returns what its search
        wrote (widened by the exclusions its history does not hold; it never writes a
        history item); a model scoring every item returns its top `k`, and the items of
        `keep` [len(histories), T] with their scores (`Candidates.from_scores`)."""
        if not self.capabilities.generator:
            scores = self.score(histories, requests=requests)
            mask_rows(scores, exclude)
            return Candidates.from_scores(scores, k, keep)
        self._check_index(histories)
        reqs = self._requests(requests, len(histories))
        ok = ~self.fallback(histories, reqs)
        rows, rest = np.flatnonzero(ok), np.flatnonzero(~ok)
        parts = []
        if len(rest):
            pop = torch.from_numpy(self.popularity).float().expand(len(rest), -1).clone()
            mask_rows(pop, None if exclude is None else exclude[rest])
            kept = None if keep is None else keep[torch.from_numpy(rest)]
            parts.append((rest, Candidates.from_scores(pop, k, kept)))
        if len(rows):
            h = histories if len(rows) == len(histories) else histories.take(rows)
            mine = None if exclude is None else exclude[rows]
            width = self.width(h, k, mine)
            if reqs is None:
                found = self._top(h, width)
            else:
                found = self._top(h, width, requests=[reqs[r] for r in rows])
            parts.append((rows, found.without(mine)))
        return Candidates.stack(parts, len(histories))

    def width(self, histories: Histories, k: int, exclude: sp.csr_matrix | None = None) -> int:
        """How many items a search must write so that `k` are left after `exclude`: `k`,
        for a generator plus the most exclusions a row's history does not already hold."""
        if not self.capabilities.generator or exclude is None or not exclude.nnz:
            return min(k, self.n_items)
        ones = np.ones(len(histories.items), dtype=np.float32)
        h = sp.csr_matrix((ones, (histories.row_of_items(), histories.items)), shape=exclude.shape)
        stored = exclude.tocsr().astype(np.float32)  # every stored entry, also an explicit 0
        stored.data = np.ones_like(stored.data)
        outside = (stored - h.astype(bool).astype(np.float32)) > 0
        return min(k + int(np.asarray(outside.sum(1)).max()), self.n_items)

    def score(
        self,
        histories: Histories,
        k: int | None = None,
        requests: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Scores [len(histories), n_items] (float32, CPU; higher = better); fallback rows
        get popularity. A generator has a score only for what it writes for a top-`k`
        (default: its beam; `top`'s candidates as a dense row), -inf for every other
        item. Nothing is masked here. `requests`: a free-text request per row, read by
        models that can (`reads_requests`), ignored by others."""
        self._check_index(histories)
        reqs = self._requests(requests, len(histories))
        ok = ~self.fallback(histories, reqs)

        def part(rows: np.ndarray | None) -> torch.Tensor:
            h = histories if rows is None else histories.take(rows)
            if reqs is None:
                return self._score(h, k or 0)
            return self._score(
                h, k or 0, requests=reqs if rows is None else [reqs[r] for r in rows]
            )

        if len(ok) and ok.all():  # the common case: no batch copy, no scatter; one copy of the
            # scores, since callers mask in place and a model may return its own memory
            out = part(None).detach().float().cpu().clone()
        else:
            out = torch.from_numpy(self.popularity).float().expand(len(histories), -1).clone()
            if ok.any():
                out[torch.from_numpy(ok)] = part(np.flatnonzero(ok)).detach().float().cpu()
        return out

    def _check_index(self, histories: Histories) -> None:
        if histories.n_items != self.n_items:
            raise ValueError(f"histories index {histories.n_items} items, the model {self.n_items}")

    def _requests(self, requests: Sequence[str] | None, n: int) -> list[str] | None:
        """The per-row requests this model reads (None: it reads none, or none were given)."""
        if requests is None or not self.capabilities.reads_requests or not any(requests):
            return None
        if len(requests) != n:
            raise ValueError("requests: one per history row")
        return [str(r or "") for r in requests]

    def _score(self, histories: Histories, k: int, **request: Any) -> torch.Tensor:
        """Scores for rows that can be personalised; `k` > 0: only the top `k` matter. A
        generator's are its `_top` as a dense row."""
        if self.capabilities.generator:
            return self._top(histories, k, **request).dense(self.n_items)
        raise NotImplementedError

    def _top(self, histories: Histories, k: int, **request: Any) -> Candidates:
        """A generator's search for rows it can personalise: what it writes for a top-`k`
        (its beam, at least `k`), never a history item."""
        raise NotImplementedError

    # ------------------------------------------------------------------ artefacts
    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        """Take what `_state` saved. Strict: every tensor is checked against the shape and
        dtype this model's config implies (`_expect`, `_load_module`) before it is used."""
        self._expect(state, {})

    def _expect(self, state: dict[str, np.ndarray], spec: dict[str, tuple]) -> None:
        """`state` holds exactly `spec`'s tensors: {name: (shape, dtypes)}, None = any size."""
        check_state(  # named as in the file
            {f"model.{k}": v for k, v in state.items()},
            {f"model.{k}": v for k, v in spec.items()},
            f"{self.name} with n_users={self.n_users}, n_items={self.n_items}",
        )

    def _load_module(
        self, module: torch.nn.Module, state: dict[str, np.ndarray], prefix: str = ""
    ) -> None:
        """Load the tensors named `prefix`… into `module` (built from the config), after
        checking each against the module's own: same names, shapes and dtypes (the float32
        that `_state` saves). torch would cast an int8 tensor silently and fail only on a
        shape; this fails on both, naming the tensor."""
        own = {prefix + k: v for k, v in module.state_dict().items()}
        part = {k: v for k, v in state.items() if k.startswith(prefix)}
        # a 0-d tensor is written as shape (1,) (np.ascontiguousarray), and torch takes it
        self._expect(
            part,
            {
                k: (tuple(v.shape) or (1,), (str(v.dtype).removeprefix("torch."),))
                for k, v in own.items()
            },
        )
        module.load_state_dict({k[len(prefix) :]: torch.from_numpy(v) for k, v in part.items()})

    def save(self, path: str | Path, extra: dict[str, str] | None = None) -> Path:
        """Write config.json + ids.json + weights.safetensors (+ `extra` JSON files by
        name, e.g. the pipeline's fitted stages) atomically. The run settings are not
        written: an artefact is the same wherever and however it was trained."""
        tensors = {"popularity": self.popularity}
        tensors |= {f"model.{k}": v for k, v in self._state().items()}
        header = {
            "model": self.name,
            "config": dataclasses.asdict(self.config),
            "n_users": self.n_users,
            "n_items": self.n_items,
        }
        return write_dir(path, header, self.meta, tensors, extra)

    @classmethod
    def load(cls, path: str | Path, run: RunSettings | None = None) -> Self:
        """A saved model, run by `run` (default: `RunSettings()`, so `device` auto). Keys
        of other versions' configs (run settings saved before they were split off,
        settings since removed) are dropped."""
        config, meta, state = read_dir(path, cls.name)
        values = dict(config["config"])
        sizes = config.get("n_users"), config.get("n_items")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
            raise ValueError(f"{path}/config.json: n_users and n_items must be counts")
        try:
            model = cls(config_from_dict(cls.Config, values), run)
            model.n_users, model.n_items = sizes
            model.meta = meta
            check_state(
                {k: v for k, v in state.items() if not k.startswith("model.")},
                {"popularity": ((model.n_items,), ("float32",))},
                f"{cls.name} with n_items={model.n_items}",
            )
            model.popularity = state["popularity"]
            model._load_state({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        except (ValueError, TypeError, RuntimeError) as e:  # config, shapes, dtypes
            raise ValueError(f"{path}: cannot load this {cls.name} model: {e}") from e
        return model


class NetworkModel(Recommender):
    """A model whose learned weights are one torch module, `self.net`, built from its
    config by `_build`: saved as `net.*` tensors and loaded strictly into a fresh build."""

    net: torch.nn.Module

    def _build(self) -> torch.nn.Module:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        return {f"net.{k}": v.cpu().numpy() for k, v in self.net.state_dict().items()}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.net = self._build()
        self._load_module(self.net, state, "net.")
        self._expect({k: v for k, v in state.items() if not k.startswith("net.")}, {})
        self.net.to(self.device).eval()


def beam_width(beam: int, k: int, n_items: int) -> int:
    """A generator's beam for a top-`k`: its configured width, widened to `k` (only the
    items written get a score), never past the catalogue."""
    return max(1, min(max(beam, k), n_items))


def torch_csr(m: Any) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (multi-threaded sparse @ dense)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)),
            size=m.shape,
            check_invariants=False,
        )
