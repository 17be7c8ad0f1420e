"""The Python API, for notebooks: the same product as the command line, on DataFrames.

    import directrec as dr

    data = dr.dataset(events, items=catalogue,
                      columns={"user": "customer_id", "item": "sku", "time": "ts"},
                      item_columns={"id": "sku", "title": "name", "categories": "tags"})
    trained = dr.train(data, recipe="sasrec-ce", holdout="loo")
    lists = trained.recommend(data, users=["c1", "c2"], k=10, explain=True)
    figures = trained.evaluate(data)              # leave-one-out, full ranking
    trained.save("models/shop")                   # what `directrec recommend --model` reads

`dataset` validates as `directrec ingest` does (a mapped column that is missing is an error
naming it); `train` fits the recipe's model and stages by the protocol the CLI uses; a
trained model holds what it learned, and histories are always passed in (`data`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from directrec.data.dataset import Dataset
from directrec.data.histories import Histories
from directrec.data.schema import DataError, make_interactions
from directrec.generate.stages import Stages
from directrec.models.base import Recommender

COLUMNS = ("user", "item", "time", "rating")
ITEM_COLUMNS = ("id", "title", "text", "categories", "image")


def _mapped(
    frame: pd.DataFrame, mapping: Mapping[str, str], keys: Sequence[str], what: str
) -> dict:
    """{key: column} for the keys mapped (by default a key maps to the column of its name),
    refusing a mapped column the frame lacks or a key that is not one of `keys`."""
    unknown = set(mapping) - set(keys)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {sorted(unknown)}; keys are {', '.join(keys)}")
    out = {}
    for key in keys:
        col = mapping.get(key, key if key in frame.columns else None)
        if col is None:
            continue
        if col not in frame.columns:
            raise DataError(
                f"{what}: column {col!r} (mapped as {key}) not found; the frame has "
                f"{list(frame.columns)}",
                field=col,
            )
        out[key] = col
    return out


def dataset(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    item_columns: Mapping[str, str] | None = None,
) -> Dataset:
    """An indexed data set from DataFrames. `columns` maps user, item and optionally time
    (Unix times, their unit read from their magnitude, or ISO-8601) and rating to the
    frame's columns; `item_columns` maps id, title, text, categories (a list or a
    "|"-separated string) and image (a local file path, relative to the working
    directory or absolute) for the catalogue."""
    from directrec.data.loaders import to_number, to_timestamp
    from directrec.data.parsing import image_paths

    cols = _mapped(interactions, columns or {}, COLUMNS, "interactions")
    for key in ("user", "item"):
        if key not in cols:
            raise DataError(f"interactions: map a {key} column (columns={{'{key}': NAME}})")
    df = interactions.reset_index(drop=True)
    df.index = np.arange(1, len(df) + 1)  # 1-based rows in error messages
    where = "<interactions DataFrame>"
    inter = make_interactions(
        df[cols["user"]],
        df[cols["item"]],
        timestamp=to_timestamp(df[cols["time"]], where, cols["time"]) if "time" in cols else None,
        rating=to_number(df[cols["rating"]], where, cols["rating"]) if "rating" in cols else None,
    )
    table = None
    if items is not None:
        icols = _mapped(items, item_columns or {}, ITEM_COLUMNS, "items")
        if "id" not in icols:
            raise DataError("items: map an id column (item_columns={'id': NAME})")

        def col(key: str) -> pd.Series:
            return items[icols[key]].fillna("") if key in icols else pd.Series([""] * len(items))

        cats = col("categories").map(
            lambda v: (
                [str(x) for x in v]
                if isinstance(v, list | tuple | np.ndarray)
                else [c for c in str(v).split("|") if c]
            )
        )
        table = pd.DataFrame(
            {
                "item_id": items[icols["id"]].astype(str).to_numpy(),
                "title": col("title").astype(str).to_numpy(),
                "text": col("text").astype(str).to_numpy(),
                "categories": cats.to_numpy(),
                "image": image_paths(
                    col("image").set_axis(np.arange(1, len(items) + 1)),
                    "<items DataFrame>",
                    icols.get("image", "image"),
                    base=Path.cwd(),
                ).to_numpy(),
            }
        )
    return Dataset.from_frames(inter, table, include_catalog_items=table is not None)


@dataclass
class Trained:
    """A fitted model, its fitted stages and the recipe that made it."""

    model: Recommender
    stages: Stages

    @property
    def recipe(self) -> dict[str, Any]:
        return dict(self.model.meta.get("recipe", {}))

    def recommend(
        self,
        data: Dataset,
        users: Sequence[str],
        k: int = 10,
        *,
        explain: bool = False,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-`k` lists for `users` (raw ids) from their histories in `data`: one row per
        item with user_id, rank, item_id, title, score and (with `explain`) reason."""
        from directrec.data.dataset import IdMap
        from directrec.generate.context import item_info
        from directrec.generate.pipeline import ListOptions, recommend

        items = IdMap(np.array(self.model.meta["item_ids"], dtype=object))
        known = IdMap(np.array(self.model.meta.get("user_ids", []), dtype=object))
        seqs = data.interactions.sequences()
        index = data.users.indices([str(u) for u in users])
        raw_items = data.items.ids
        lists = [[str(raw_items[i]) for i in seqs[u]] if u >= 0 else [] for u in index.tolist()]
        histories = Histories.from_raw(lists, items, known.indices([str(u) for u in users]))
        info = item_info(
            items,
            [str(x) for x in raw_items],
            data.catalog.titles,
            data.catalog.categories,
            data.catalog.embeddings,
        )
        opts = ListOptions(k=k, exclude_seen=exclude_seen, explain=explain)
        recs = recommend(self.model, histories, opts, info=info, stages=self.stages)
        rows = []
        for user, rec in zip(users, recs, strict=True):
            reasons = rec.reasons or []
            for rank, (i, s) in enumerate(zip(rec.items, rec.scores, strict=True)):
                row = {
                    "user_id": str(user),
                    "rank": rank + 1,
                    "item_id": str(items.ids[i]),
                    "title": info.titles[i],
                    "score": float(s),
                }
                if explain:
                    row["reason"] = reasons[rank].text if rank < len(reasons) else ""
                rows.append(row)
        return pd.DataFrame(rows)

    def evaluate(self, data: Dataset, *, ks: Sequence[int] = (10, 20)) -> dict[str, float]:
        """Full-ranking metrics (HR, Recall, NDCG, MRR … @k) on `data`'s test stage, through
        the fitted stages. Honest only for a model trained with holdout="loo" (others are
        refused: they saw the test items)."""
        from directrec.data.split import leave_one_out
        from directrec.evaluate.protocol import evaluate as run

        if self.model.meta.get("data_fingerprint") != data.fingerprint:
            raise ValueError("evaluate on the data the model was trained on (same ids and index)")
        if self.model.meta.get("holdout") != "loo":
            raise ValueError("the model saw every test item: train it with holdout='loo'")
        sp = leave_one_out(data.interactions)  # the split `holdout="loo"` kept out
        _, seen, targets = sp.stage("test")
        result = run(
            self.model, sp.inputs("test"), targets, tuple(ks), seen=seen, stages=self.stages
        )
        return result.metrics

    def save(self, path: str | Path) -> Path:
        """The model directory `directrec recommend/serve --model` read (with its stages)."""
        return self.model.save(path, extra=self.stages.files())


def train(
    data: Dataset,
    model: str | None = None,
    *,
    recipe: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    holdout: str = "none",
    seed: int = 42,
    valid_users: int | None = None,
) -> Trained:
    """Fit a model as `directrec train` does: the recipe (default: the model's shipped
    one for data of this size), `settings` over it, its stages fitted after it.
    `holdout="loo"` keeps each user's last item out, so `evaluate` gives an honest test
    figure."""
    from directrec import recipes as rcp
    from directrec.evaluate.protocol import fit_with_stages
    from directrec.models import create

    if recipe is not None:
        chosen = rcp.resolve(str(recipe))
        if model is not None and model != chosen.model:
            raise ValueError(f"recipe {chosen.name!r} trains {chosen.model}, not {model}")
    elif model is not None:  # the shipped recipe that fits the data's size, as the CLI picks
        shape = rcp.DataShape.of(data.interactions)
        chosen = rcp.default_for(model, shape)
    else:
        raise ValueError("give a model name or a recipe")
    chosen = chosen.with_settings({**dict(settings or {}), "seed": seed})
    m = create(chosen.model, dict(chosen.settings))
    stages = fit_with_stages(
        m, data, dict(chosen.stages), holdout, seed=seed, valid_users=valid_users
    )
    m.meta.update(
        user_ids=data.users.ids.tolist(),
        item_ids=data.items.ids.tolist(),
        data_fingerprint=data.fingerprint,
        holdout=holdout,
        recipe=chosen.to_dict(),
    )
    return Trained(m, stages)


def load(path: str | Path) -> Trained:
    """A model directory written by `Trained.save` or `directrec train`."""
    from directrec.generate.stages import load_pipeline

    return Trained(*load_pipeline(path))
