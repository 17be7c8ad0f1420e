"""directrec: a generative model directly writes each user's recommendation list.

The Python API (`directrec.api`, loaded on first use so the command line starts fast):
`dataset`, `train`, `load` and `Trained` (`Trained.evaluate`, `.recommend`, `.save`)."""

from __future__ import annotations

from typing import Any

__all__ = ["Trained", "dataset", "load", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from directrec import api

        return getattr(api, name)
    raise AttributeError(f"module 'directrec' has no attribute {name!r}")
