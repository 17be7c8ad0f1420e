"""Search a model's settings with Optuna on the validation stage, never the test stage.

The data are split leave-one-out (data/split.py). Every trial builds the model with the
base settings plus the trial's suggestions, fits it on the training part alone (each
user's last two items held out) and scores NDCG@10 on the validation targets (each user's
second-to-last item), ranking against every item with the user's training history
excluded. The test targets (each user's last item) are never read, so a figure measured on
test afterwards with the tuned settings stays an honest one.

Models that stop early (the epoch-trained generators) pick their epoch on the same
validation targets, as the benchmark's protocol does; their trial score is then the
validation NDCG@10 of the epoch kept.

The sampler is TPE with a fixed seed and every trial's model gets the same seed, so the
same data, space, seed and trial count give the same trials and the same best settings.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from directrec.data.dataset import Dataset
from directrec.data.split import leave_one_out
from directrec.evaluate.protocol import evaluate, validator
from directrec.models import MODELS, create

METRIC = "ndcg@10"


@dataclass(frozen=True)
class Param:
    """One searched setting: numbers from `low` to `high` (log-uniform if `log`; integers
    when the setting is an int), or one of `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any, name: str, default: Any) -> Any:
        """The trial's value for setting `name`, typed like its `default`."""
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if isinstance(default, int) and not isinstance(default, bool):
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def describe(self) -> str:
        if self.choices:
            return " | ".join(str(c) for c in self.choices)
        return f"{self.low:g} … {self.high:g}" + (" (log)" if self.log else "")


def _r(low: float, high: float, log: bool = False) -> Param:
    return Param(low=low, high=high, log=log)


def _c(*choices: Any) -> Param:
    return Param(choices=choices)


# The main knobs of each model and ranges that hold the published defaults well inside them.
# Sizes that must divide each other (heads and dim) are choices that always do.
_FACTORS = {"factors": _r(8, 256, log=True)}
_SASREC = {
    "dim": _c(32, 64, 128),
    "layers": _r(1, 4),
    "heads": _c(1, 2, 4),
    "dropout": _r(0.0, 0.5),
    "lr": _r(1e-4, 1e-2, log=True),
    "weight_decay": _r(0.0, 0.1),
}
SPACES: dict[str, dict[str, Param]] = {
    "itemknn": {"neighbours": _r(10, 1000, log=True), "shrink": _r(0.0, 200.0)},
    "userknn": {
        "neighbours": _r(10, 500, log=True),
        "shrink": _r(0.0, 200.0),
        "similarity": _c("cosine", "pearson"),
    },
    "content": {"half_life": _r(0.0, 100.0), "use_ratings": _c(True, False)},
    "ease": {"l2": _r(1.0, 10_000.0, log=True)},
    "als": {
        **_FACTORS,
        "regularization": _r(1e-4, 1.0, log=True),
        "alpha": _r(0.1, 50.0, log=True),
        "iterations": _r(5, 30),
    },
    "bpr": {
        **_FACTORS,
        "learning_rate": _r(1e-3, 0.1, log=True),
        "regularization": _r(1e-5, 0.1, log=True),
        "iterations": _r(20, 300, log=True),
    },
    "multvae": {
        "hidden": _c(200, 600),
        "latent": _c(50, 100, 200),
        "dropout": _r(0.0, 0.7),
        "beta_max": _r(0.0, 1.0),
        "lr": _r(1e-4, 1e-2, log=True),
    },
    "cfgan": {
        "hidden": _r(64, 512, log=True),
        "lr": _r(1e-5, 1e-3, log=True),
        "lr_d": _r(1e-5, 1e-3, log=True),
        "pm_ratio": _r(0.0, 0.9),
        "zr_ratio": _r(0.0, 0.9),
        "zr_weight": _r(0.01, 1.0, log=True),
    },
    "sasrec": _SASREC,
    "sasrec-ce": _SASREC,
    "semantic-id": {
        "dim": _c(64, 128, 256),
        "heads": _c(2, 4),
        "enc_layers": _r(1, 4),
        "dropout": _r(0.0, 0.4),
        "lr": _r(3e-4, 3e-3, log=True),
        "id_loss": _r(0.0, 2.0),
    },
    "llm": {
        "lr": _r(1e-5, 1e-3, log=True),
        "lora_r": _c(4, 8, 16, 32),
        "prompt_items": _r(5, 20),
    },
    "biasedmf": {**_FACTORS, "lr": _r(1e-3, 3e-2, log=True), "reg": _r(1e-3, 0.3, log=True)},
    "svdpp": {**_FACTORS, "lr": _r(1e-3, 3e-2, log=True), "reg": _r(1e-3, 0.3, log=True)},
    "nmf": {**_FACTORS, "lr": _r(1e-3, 3e-2, log=True), "reg": _r(1e-3, 0.3, log=True)},
}


def check_space(model: str, space: Mapping[str, Param], where: str) -> dict[str, Param]:
    """`space` with every name a setting of `model` and every bound or choice of the
    setting's type; ValueError naming `where` and the setting otherwise."""
    from directrec.recipes import check_setting

    if not space:
        raise ValueError(f"{where}: nothing to search for {model}")
    for name, p in space.items():
        w = f"{where}: {name}"
        values = list(p.choices) if p.choices else [p.low, p.high]
        for v in values:
            check_setting(model, name, v, w)  # the name exists and the value is typed right
        if not p.choices:
            if not p.low <= p.high:
                raise ValueError(f"{w}: low {p.low} is above high {p.high}")
            if p.log and p.low <= 0:
                raise ValueError(f"{w}: a log range needs low > 0, not {p.low}")
    return dict(space)


def default_space(model: str) -> dict[str, Param]:
    """The built-in search space of `model`."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    if model not in SPACES:
        raise ValueError(f"{model} has no settings to tune (give a space with --space FILE)")
    return check_space(model, SPACES[model], f"the built-in space of {model}")


def read_space(path: str | Path, model: str) -> dict[str, Param]:
    """A search-space file: a [space] table whose keys are `model`'s settings, each a
    range `{low = 1, high = 100, log = true}` or a list of choices `[32, 64, 128]`. The
    file's settings are searched and nothing else."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read the search space ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    extra = set(doc) - {"space"}
    if extra or not isinstance(doc.get("space"), dict):
        raise ValueError(f"{path}: expected one table [space] (found {sorted(doc) or 'none'})")
    space: dict[str, Param] = {}
    for name, spec in doc["space"].items():
        w = f"{path}: [space] {name}"
        if isinstance(spec, list):
            if not spec:
                raise ValueError(f"{w}: an empty list of choices")
            space[name] = Param(choices=tuple(spec))
        elif isinstance(spec, dict):
            unknown = set(spec) - {"low", "high", "log"}
            if unknown or "low" not in spec or "high" not in spec:
                raise ValueError(f"{w}: a range is {{low = …, high = …, log = true|false}}")
            if not isinstance(spec.get("log", False), bool):
                raise ValueError(f"{w}: log takes true or false")
            space[name] = Param(low=spec["low"], high=spec["high"], log=spec.get("log", False))
        else:
            raise ValueError(f"{w}: a range {{low, high, log}} or a list of choices")
    return check_space(model, space, str(path))


@dataclass
class Trial:
    number: int
    settings: dict[str, Any]
    value: float
    seconds: float


@dataclass
class TuneResult:
    """The best settings found, their validation score, and every trial."""

    model: str
    best: dict[str, Any]
    value: float
    best_trial: int
    trials: list[Trial] = field(default_factory=list)
    n_users: int = 0  # users whose validation item was scored
    n_train: int = 0  # interactions each trial was fit on


def tune(
    model: str,
    ds: Dataset,
    space: Mapping[str, Param],
    *,
    trials: int,
    settings: Mapping[str, Any] | None = None,
    seed: int = 42,
    max_history: int | None = None,
    valid_users: int | None = None,
    on_trial: Callable[[Trial, TuneResult], None] = lambda t, r: None,
) -> TuneResult:
    """Search `space` for `model` over `trials` trials (module doc); `settings` are fixed
    for every trial (the recipe's, `--set`'s). `on_trial` hears each finished trial with
    the best so far."""
    import optuna

    if trials < 1:
        raise ValueError("--trials must be ≥ 1")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    from directrec.recipes import setting_defaults

    defaults = setting_defaults(model)
    split = leave_one_out(ds.interactions)
    fit_data, seen, targets = split.stage("valid", max_history)
    inputs = split.inputs("valid", max_history)
    if len(targets) == 0:
        raise ValueError("no user has the 3 interactions a validation target needs")
    fixed = {**(settings or {}), "seed": seed, "progress": False}
    # early stopping reads the validation targets too (module doc); a fixed user sample
    check = validator(inputs, targets, seen=seen, max_users=valid_users, seed=seed)
    result = TuneResult(model, {}, -math.inf, -1, n_users=len(targets), n_train=len(fit_data))

    def objective(trial: optuna.Trial) -> float:
        chosen = {n: p.suggest(trial, n, defaults[n]) for n, p in space.items()}
        m = create(model, {**fixed, **chosen})
        stops = m.capabilities.early_stopping
        m.fit(fit_data, ds.catalog, validator=check if stops else None)
        return evaluate(m, inputs, targets, (10,), seen=seen).metrics[METRIC]

    def heard(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        seconds = (frozen.datetime_complete - frozen.datetime_start).total_seconds()
        t = Trial(frozen.number, dict(frozen.params), float(frozen.value), seconds)
        result.trials.append(t)
        if t.value > result.value:
            result.best, result.value, result.best_trial = t.settings, t.value, t.number
        on_trial(t, result)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the caller reports progress
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=trials, callbacks=[heard], catch=())
    return result
