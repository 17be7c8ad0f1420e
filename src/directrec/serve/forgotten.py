"""Forgotten users stay out of published artefacts.

`forget` deletes a user's rows and records sha256 of the id in the store (never the id).
A model directory carries the raw user ids behind its indices (ids.json); a model with
per-user factors (`capabilities.personalises == "user"`) also carries a learned vector per
user. Publishing checks the artefact against the store's forgotten hashes: a per-user
model naming a forgotten user is refused (its vector cannot be removed without refitting:
train again, or `directrec update`, which refits on the store without them); any other
model's published copy has those ids replaced by a placeholder, as its weights hold
nothing per user.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from directrec.data.storebase import user_hash


def placeholder(index: int) -> str:
    """What stands in a user map for a forgotten user: unique, never a stored id (the NUL
    byte cannot come through the loaders)."""
    return f"\x00forgotten:{index}"


def drop_forgotten(user_ids: list[str], forgotten: Collection[str]) -> tuple[list[str], int]:
    """`user_ids` with each forgotten user's id replaced by a placeholder (indices keep
    their meaning); how many were replaced."""
    if not forgotten:
        return list(user_ids), 0
    out = [placeholder(n) if user_hash(u) in forgotten else u for n, u in enumerate(user_ids)]
    return out, sum(1 for a, b in zip(out, user_ids, strict=True) if a != b)


def personalises_per_user(model_name: str) -> bool:
    from directrec.models import MODELS

    cls = MODELS.get(model_name)
    return cls is not None and cls.capabilities.personalises == "user"


def check_artefact(model_dir: str | Path, forgotten: Collection[str]) -> int:
    """Raise ValueError if the model in `model_dir` keeps per-user vectors of a forgotten
    user; otherwise rewrite its ids.json without forgotten ids (call it on a copy being
    published, never on the user's directory). Returns how many ids were replaced."""
    model_dir = Path(model_dir)
    ids_file = model_dir / "ids.json"
    if not forgotten or not ids_file.is_file():
        return 0
    ids = json.loads(ids_file.read_text())
    users, n = drop_forgotten([str(u) for u in ids.get("user_ids", [])], forgotten)
    if not n:
        return 0
    name = json.loads((model_dir / "config.json").read_text()).get("model", "")
    if personalises_per_user(str(name)):
        raise ValueError(
            f"{model_dir}: this {name} model holds learned vectors of {n} user(s) forgotten "
            "since it was trained; it cannot be published. Train it again on the store "
            "(`directrec train`) or refit it with `directrec update`"
        )
    ids["user_ids"] = users
    ids_file.write_text(json.dumps(ids))
    return n
