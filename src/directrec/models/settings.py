"""A setting's meaning, declared beside its default: `setting(100, "neighbours kept per
item")` is a dataclass field whose metadata carries the help text that `directrec train
MODEL --help` and `directrec models MODEL` print. Kept in the field (not parsed from the
source's comments) so it survives packaging and is checked by a test for every model.

A subclass that only changes a default (`epochs: int = 60` over `TrainConfig`'s) keeps the
meaning its base class declared: `setting_help` looks the name up along the MRO.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def setting(default: T, help: str) -> T:
    """A config field with default `default` and a one-line meaning `help`."""
    # typed as T so that `neighbours: int = setting(100, "...")` checks like a plain default
    field: Any = dataclasses.field(default=default, metadata={"help": help})
    return field


@dataclasses.dataclass
class ModelConfig:
    """What every model's config holds; each model's `Config` extends it with its own."""

    seed: int = setting(42, "random seed: initialisation, sampling and shuffling")


def setting_help(*config_classes: type) -> dict[str, str]:
    """Every field of the dataclasses `config_classes` → its meaning ("" where none is
    declared), the nearest declaration along each class's MRO winning."""
    out: dict[str, str] = {}
    for cls in config_classes:
        for f in dataclasses.fields(cls):
            text = ""
            for klass in cls.__mro__:
                declared = getattr(klass, "__dataclass_fields__", {}).get(f.name)
                if declared is not None and declared.metadata.get("help"):
                    text = declared.metadata["help"]
                    break
            out.setdefault(f.name, text)
    return out
