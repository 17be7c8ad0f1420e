"""Recipes: how a model is made, as a typed, versioned TOML file.

A recipe names a model, its settings (exactly the names `Recommender.setting_fields()`
gives) grouped by part (`models.settings.PARTS`: the network's shape, training, decoding,
the model's own, run settings), the learned stages to fit after training, and optionally
the protocol `directrec benchmark --recipe` runs it under and what it was measured to give
there:

    [recipe]
    version = 1
    name = "ml1m"
    model = "sasrec-ce"
    description = "one line, then whatever a reader needs"

    [recipe.measured]            # only for figures these settings produced
    data = "MovieLens-1M, leave-one-out, full ranking"
    figure = "HR@10 0.3255, NDCG@10 0.1890"
    command = "directrec benchmark --recipe ml1m --db ml1m.duckdb --out results/ml1m"

    [network]                    # each setting under its part's table
    layers = 4
    [training]
    lr = 0.002

    [stages.prior_blend]         # prior_blend | query_blend | cold_gate (generate/fitting.py)
    users = 500

    [benchmark]
    models = ["pop", "ease"]     # anchors run beside the recipe's model
    split = "loo"
    k = [10, 20]
    [benchmark.settings.ease]
    l2 = 300.0

A flat `[settings]` table, with the settings of any part, is read too (and is what the
JSON form, `to_dict`, holds). Shipped recipes live beside this file (`directrec recipes` lists them). A model trained
from one stores the resolved recipe (after `--set`) in its meta, so `directrec recipes show
--model DIR` says how it was made. Every error names the file, the key and the closest
valid names.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from directrec.generate.fitting import check_stage_params
from directrec.models.settings import PARTS
from directrec.recipes.toml import dumps

if TYPE_CHECKING:
    from directrec.data.dataset import Interactions

VERSION = 1
SPLITS = ("loo", "temporal")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class RecipeError(ValueError):
    """A recipe (or a `--set` pair) that cannot be used; the message names where and why."""


def closest(word: str, names: Iterable[str]) -> str:
    """'; did you mean X or Y?' for the closest of `names`, else the list of them all."""
    names = sorted(names)
    near = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
    if near:
        return "; did you mean " + " or ".join(repr(n) for n in near) + "?"
    return f" (valid: {', '.join(names)})"


# --------------------------------------------------------------------------- settings
def setting_defaults(model: str) -> dict[str, Any]:
    """Every setting `model` takes, with its default (None where it has none)."""
    fields = _model_class(model).setting_fields()
    out = {}
    for name, f in fields.items():
        if f.default is not dataclasses.MISSING:
            out[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = f.default_factory()
        else:
            out[name] = None
    return out


def setting_parts(model: str) -> dict[str, str]:
    """Every setting `model` takes → its part (network, training, decoding, …)."""
    return _model_class(model).setting_parts()


def _model_class(model: str):
    from directrec.models import MODELS

    if model not in MODELS:
        raise RecipeError(f"unknown model {model!r}{closest(model, MODELS)}")
    return MODELS[model]


def check_setting(model: str, key: str, value: Any, where: str) -> Any:
    """`value` for `model`'s setting `key`, typed as the setting's default is (an int is
    taken for a float; a bool must be a bool, a str a str); RecipeError otherwise."""
    defaults = setting_defaults(model)
    if key not in defaults:
        raise RecipeError(f"{where}: {model} has no setting {key!r}{closest(key, defaults)}")
    default = defaults[key]
    if default is None:  # no default to type it by: any TOML value
        return value
    want = type(default)
    ok = (
        isinstance(value, bool)
        if want is bool
        else isinstance(value, int | float) and not isinstance(value, bool)
        if want is float
        else isinstance(value, want) and not isinstance(value, bool)
    )
    if not ok:
        raise RecipeError(
            f"{where}: {model} setting {key!r} takes a {want.__name__}, "
            f"not {type(value).__name__} {value!r}"
        )
    return float(value) if want is float else value


def convert_setting(model: str, key: str, raw: str, where: str) -> Any:
    """A `--set key=value` text converted to the type of `model`'s setting `key`."""
    defaults = setting_defaults(model)
    if key not in defaults:
        raise RecipeError(f"{where}: {model} has no setting {key!r}{closest(key, defaults)}")
    default = defaults[key]
    try:
        if isinstance(default, bool):
            if raw.lower() not in _TRUE + _FALSE:
                raise ValueError(raw)
            return raw.lower() in _TRUE
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if default is None:  # untyped: a number if it reads as one
            try:
                return json.loads(raw)
            except ValueError:
                return raw
        return raw
    except ValueError:
        raise RecipeError(
            f"{where}: {model} setting {key!r} takes a {type(default).__name__}, not {raw!r}"
        ) from None


def split_pair(pair: str) -> tuple[str, str, str]:
    """'model.key=value' → (model, key, value); 'key=value' → ('', key, value)."""
    if "=" not in pair:
        raise RecipeError(f"--set {pair!r}: expected key=value or model.key=value")
    key, raw = pair.split("=", 1)
    target, _, fld = key.strip().rpartition(".")
    return target, fld, raw


# --------------------------------------------------------------------------- the recipe
@dataclass(frozen=True)
class Measured:
    """What a recipe was measured to give, and the command that reproduces it."""

    data: str
    figure: str
    command: str
    results: str = ""  # where the results document lies (docs/results/…), if published


@dataclass(frozen=True)
class DataShape:
    """How big a data set is, as far as choosing a recipe goes."""

    interactions: int
    users: int

    @classmethod
    def of(cls, interactions: Interactions) -> DataShape:
        return cls(len(interactions), interactions.n_users)

    @property
    def mean_history(self) -> float:
        return self.interactions / max(self.users, 1)


@dataclass(frozen=True)
class Fits:
    """The data a recipe is chosen for when `train MODEL` names no recipe: at least this
    many interactions, and this many per user on average (the shape it was measured to
    beat the model's defaults on)."""

    min_interactions: int = 0
    min_mean_history: float = 0.0

    def matches(self, shape: DataShape) -> bool:
        return (
            shape.interactions >= self.min_interactions
            and shape.mean_history >= self.min_mean_history
        )


@dataclass(frozen=True)
class Protocol:
    """How `directrec benchmark --recipe` runs the recipe (and `evaluate --recipe` scores)."""

    models: tuple[str, ...] = ()  # anchors run beside the recipe's model
    split: str = "loo"
    k: tuple[int, ...] = (10, 20)
    max_history: int | None = None
    valid_users: int | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # anchor → settings


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    benchmark: Protocol | None = None
    measured: Measured | None = None
    fits: Fits | None = None  # the data `train MODEL` picks it for, without --recipe
    version: int = VERSION
    source: str = ""  # the file it came from (not part of the recipe itself)

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, path_or_name: str | Path) -> Recipe:
        """A shipped recipe by name, or a recipe file by path."""
        return resolve(path_or_name)

    @classmethod
    def read(cls, path: str | Path) -> Recipe:
        """Parse and validate one recipe file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise RecipeError(f"{path}: cannot read the recipe ({e.strerror or e})") from None
        return cls.from_text(text, str(path))

    @classmethod
    def from_text(cls, text: str, where: str) -> Recipe:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise RecipeError(f"{where}: not valid TOML: {e}") from None
        return cls.from_dict(doc, where)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> Recipe:
        """Validate a parsed recipe document (the TOML's structure, as `to_dict` gives)."""
        _keys(doc, ("recipe", "settings", *PARTS, "stages", "benchmark"), where)
        head = _table(doc, "recipe", where, required=True)
        _keys(
            head,
            ("version", "name", "model", "description", "measured", "fits"),
            f"{where}: [recipe]",
        )
        version = _get(head, "version", int, f"{where}: [recipe]", required=True)
        if version != VERSION:
            raise RecipeError(
                f"{where}: [recipe] version {version}: this directrec reads version {VERSION}"
            )
        name = _get(head, "name", str, f"{where}: [recipe]", required=True)
        model = _get(head, "model", str, f"{where}: [recipe]", required=True)
        try:
            _model_class(model)
        except RecipeError as e:
            raise RecipeError(f"{where}: [recipe] model: {e}") from None
        settings = _settings(doc, model, where)
        stages: dict[str, dict[str, Any]] = {}
        for stage, params in _table(doc, "stages", where).items():
            if not isinstance(params, dict):
                raise RecipeError(f"{where}: [stages.{stage}] must be a table of parameters")
            stages[stage] = dict(params)
        try:  # the stages and parameters the product fits (generate/fitting.py)
            check_stage_params(stages, f"{where}: [stages]")
        except ValueError as e:
            raise RecipeError(str(e)) from None
        measured = None
        if "measured" in head:
            m = _table(head, "measured", f"{where}: [recipe]")
            w = f"{where}: [recipe.measured]"
            _keys(m, ("data", "figure", "command", "results"), w)
            measured = Measured(
                data=_get(m, "data", str, w, required=True),
                figure=_get(m, "figure", str, w, required=True),
                command=_get(m, "command", str, w, required=True),
                results=_get(m, "results", str, w) or "",
            )
        fits = None
        if "fits" in head:
            f = _table(head, "fits", f"{where}: [recipe]")
            w = f"{where}: [recipe.fits]"
            _keys(f, ("min_interactions", "min_mean_history"), w)
            least = _get(f, "min_interactions", int, w) or 0
            mean = f.get("min_mean_history", 0.0)
            if not isinstance(mean, int | float) or isinstance(mean, bool):
                raise RecipeError(f"{w}: 'min_mean_history' takes a number, not {mean!r}")
            if least < 0 or mean < 0:
                raise RecipeError(f"{w}: the least interactions and mean history are ≥ 0")
            fits = Fits(min_interactions=least, min_mean_history=float(mean))
        bench = None
        if "benchmark" in doc:
            bench = _protocol(_table(doc, "benchmark", where), model, f"{where}: [benchmark]")
        return cls(
            name=name,
            model=model,
            description=_get(head, "description", str, f"{where}: [recipe]") or "",
            settings=settings,
            stages=stages,
            benchmark=bench,
            measured=measured,
            fits=fits,
            version=version,
            source=where,
        )

    @classmethod
    def plain(cls, model: str) -> Recipe:
        """The recipe of a model run with its own defaults (nothing set)."""
        _model_class(model)
        return cls(name=model, model=model, description=f"{model} with its defaults")

    # ------------------------------------------------------------------ changing
    def with_settings(self, settings: Mapping[str, Any], where: str = "--set") -> Recipe:
        """This recipe with `settings` (typed values) over its own. A change to any value
        drops `measured`: the figure belongs to the settings that produced it."""
        checked = {k: check_setting(self.model, k, v, where) for k, v in settings.items()}
        merged = {**self.settings, **checked}
        defaults = setting_defaults(self.model)
        changed = any(self.settings.get(k, defaults[k]) != v for k, v in checked.items())
        return dataclasses.replace(
            self, settings=merged, measured=None if changed else self.measured
        )

    def with_overrides(self, sets: Sequence[str] | None) -> Recipe:
        """`--set key=value` (or `MODEL.key=value`, MODEL this recipe's model) over the
        recipe's settings; an unknown key is refused with the closest valid names."""
        typed: dict[str, Any] = {}
        for pair in sets or []:
            target, key, raw = split_pair(pair)
            if target and target != self.model:
                raise RecipeError(
                    f"--set {pair!r}: this recipe trains {self.model}, not {target!r}"
                )
            typed[key] = convert_setting(self.model, key, raw, f"--set {pair!r}")
        return self.with_settings(typed)

    # ------------------------------------------------------------------ writing
    def to_dict(self, by_part: bool = False) -> dict[str, Any]:
        """The recipe as a document (JSON-able; `from_dict` reads it): its settings in one
        `settings` table, or with `by_part` in one table per part, as a recipe file has."""
        head: dict[str, Any] = {
            "version": self.version,
            "name": self.name,
            "model": self.model,
            "description": self.description,
        }
        if self.measured is not None:
            m = dataclasses.asdict(self.measured)
            head["measured"] = {k: v for k, v in m.items() if v}
        if self.fits is not None:
            head["fits"] = dataclasses.asdict(self.fits)
        doc: dict[str, Any] = {"recipe": head, "settings": dict(self.settings)}
        if by_part:
            parts = setting_parts(self.model)
            doc.pop("settings")
            for part in PARTS:
                mine = {k: v for k, v in self.settings.items() if parts[k] == part}
                if mine:
                    doc[part] = mine
        if self.stages:
            doc["stages"] = {k: dict(v) for k, v in self.stages.items()}
        if self.benchmark is not None:
            b = self.benchmark
            bench: dict[str, Any] = {"models": list(b.models), "split": b.split, "k": list(b.k)}
            if b.max_history is not None:
                bench["max_history"] = b.max_history
            if b.valid_users is not None:
                bench["valid_users"] = b.valid_users
            if b.settings:
                bench["settings"] = {m: dict(s) for m, s in b.settings.items()}
            doc["benchmark"] = bench
        return doc

    def to_toml(self) -> str:
        """The recipe as a recipe file: settings grouped by part."""
        return dumps(self.to_dict(by_part=True))

    def summary(self) -> str:
        """The description's first line."""
        return self.description.strip().splitlines()[0] if self.description.strip() else ""


def _settings(doc: Mapping[str, Any], model: str, where: str) -> dict[str, Any]:
    """The settings of a recipe document, typed: from a flat [settings] table (any part)
    and the part tables ([network], [training], …, each holding only its part's)."""
    parts = setting_parts(model)
    out: dict[str, Any] = {}
    for table in ("settings", *PARTS):
        w = f"{where}: [{table}]"
        for key, value in _table(doc, table, where).items():
            typed = check_setting(model, key, value, w)
            if table != "settings" and parts[key] != table:
                raise RecipeError(
                    f"{w}: {key!r} is a {parts[key]} setting of {model}: "
                    f"put it under [{parts[key]}]"
                )
            if key in out:
                raise RecipeError(f"{w}: {key!r} is set twice in this recipe")
            out[key] = typed
    return out


def _keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise RecipeError(f"{where}: unknown key {key!r}{closest(key, allowed)}")


def _table(doc: Mapping[str, Any], key: str, where: str, required: bool = False) -> dict:
    if key not in doc:
        if required:
            raise RecipeError(f"{where}: missing table [{key}]")
        return {}
    if not isinstance(doc[key], dict):
        raise RecipeError(f"{where}: {key!r} must be a table")
    return doc[key]


def _get(table: Mapping[str, Any], key: str, typ: type, where: str, required: bool = False):
    if key not in table:
        if required:
            raise RecipeError(f"{where}: missing {key!r}")
        return None
    value = table[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise RecipeError(f"{where}: {key!r} takes a {typ.__name__}, not {value!r}")
    return value


def _protocol(b: Mapping[str, Any], model: str, where: str) -> Protocol:
    from directrec.models import MODELS

    _keys(b, ("models", "split", "k", "max_history", "valid_users", "settings"), where)
    models = _get(b, "models", list, where) or []
    for m in models:
        if not isinstance(m, str) or m not in MODELS:
            raise RecipeError(f"{where}: models: unknown model {m!r}{closest(str(m), MODELS)}")
    split = _get(b, "split", str, where) or "loo"
    if split not in SPLITS:
        raise RecipeError(f"{where}: split {split!r}{closest(split, SPLITS)}")
    k = b.get("k", [10, 20])
    ks = [k] if isinstance(k, int) and not isinstance(k, bool) else k
    if (
        not isinstance(ks, list)
        or not ks
        or any(not isinstance(x, int) or isinstance(x, bool) or x < 1 for x in ks)
    ):
        raise RecipeError(f"{where}: k takes an integer ≥ 1 or a list of them, not {k!r}")
    for key in ("max_history", "valid_users"):
        v = _get(b, key, int, where)
        if v is not None and v < 1:
            raise RecipeError(f"{where}: {key} must be ≥ 1, not {v}")
    settings: dict[str, dict[str, Any]] = {}
    for m, s in _table(b, "settings", where).items():
        if m not in models or m == model:  # the recipe's own model: [settings]
            raise RecipeError(
                f"{where}: settings for {m!r}, which is not one of its anchor models"
                f"{closest(m, models)}"
            )
        if not isinstance(s, dict):
            raise RecipeError(f"{where}: [benchmark.settings.{m}] must be a table")
        settings[m] = {
            k: check_setting(m, k, v, f"{where.rsplit(':', 1)[0]}: [benchmark.settings.{m}]")
            for k, v in s.items()
        }
    return Protocol(
        models=tuple(models),
        split=split,
        k=tuple(sorted(set(ks))),
        max_history=b.get("max_history"),
        valid_users=b.get("valid_users"),
        settings=settings,
    )


# --------------------------------------------------------------------------- shipped
def _shipped_files() -> dict[str, Any]:
    return {
        f.name.removesuffix(".toml"): f
        for f in resources.files(__name__).iterdir()
        if f.name.endswith(".toml")
    }


def shipped() -> list[str]:
    """Names of the recipes that come with directrec."""
    return sorted(_shipped_files())


def resolve(name_or_path: str | Path) -> Recipe:
    """A recipe file by path (an existing file, or any name ending in .toml), else a
    shipped recipe by name."""
    text = str(name_or_path)
    path = Path(text)
    if path.is_file() or text.endswith(".toml") or "/" in text:
        if not path.is_file():
            raise RecipeError(f"{path}: no such recipe file")
        return Recipe.read(path)
    files = _shipped_files()
    if text not in files:
        raise RecipeError(
            f"unknown recipe {text!r}: neither a shipped recipe nor a file{closest(text, files)}"
        )
    recipe = Recipe.from_text(files[text].read_text(encoding="utf-8"), f"recipe {text}")
    if recipe.name != text:
        raise RecipeError(f"recipe {text}: names itself {recipe.name!r}")
    return recipe


def default_for(model: str, shape: DataShape | None = None) -> Recipe:
    """What `train MODEL` runs without --recipe: given the data's `shape`, the shipped
    recipe for MODEL whose `fits` it matches (the most demanding of them); else the shipped
    recipe named like the model if there is one, else the model's own defaults."""
    if shape is not None:
        fitting = [
            r
            for r in (resolve(n) for n in shipped())
            if r.model == model and r.fits is not None and r.fits.matches(shape)
        ]
        if fitting:
            return max(
                fitting,
                key=lambda r: (r.fits.min_interactions, r.fits.min_mean_history, r.name),  # type: ignore[union-attr]
            )
    return resolve(model) if model in _shipped_files() else Recipe.plain(model)


def stored(meta: Mapping[str, Any], where: str) -> Recipe:
    """The resolved recipe a saved model carries in its meta."""
    if "recipe" not in meta:
        raise RecipeError(f"{where}: this model carries no recipe (saved without one)")
    return Recipe.from_dict(_renamed(meta["recipe"]), f"{where} (stored recipe)")


def _renamed(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored recipe with the settings its model renamed since under their new names
    (`artifacts.renamed`): a model saved before a rename still says how it was made."""
    from directrec.models import MODELS
    from directrec.models.artifacts import renamed

    model = doc.get("recipe", {}).get("model") if isinstance(doc.get("recipe"), dict) else None
    if model not in MODELS:
        return dict(doc)  # from_dict names what is wrong
    config = MODELS[model].Config
    return {
        t: renamed(config, table)
        if t in ("settings", *PARTS) and isinstance(table, dict)
        else table
        for t, table in doc.items()
    }
