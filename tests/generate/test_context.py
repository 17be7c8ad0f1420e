"""ModelContext: one model aligned with a catalogue, the way the CLI, batch generation and
the service (its served version) all build lists."""

from __future__ import annotations

import numpy as np
import pytest

from directrec.generate.context import ModelContext
from directrec.models import create


def test_a_catalogue_in_memory_is_aligned_with_the_models_index(planted):
    model = create("ease").fit(planted.interactions)
    model.meta["item_ids"] = planted.items.ids.tolist()
    ids = ["new-item", *reversed(planted.items.ids.tolist())]  # another order, one extra
    titles = [f"title of {i}" for i in ids]
    cats = [[f"cat-{i}"] for i in ids]
    vectors = np.arange(len(ids), dtype=np.float32)[:, None].repeat(2, 1)
    ctx = ModelContext.for_catalogue(model, ids, titles, cats, vectors, version="v0007")
    assert ctx.version == "v0007" and len(ctx.items) == model.n_items  # EASE takes no new items
    for n in (0, 7, model.n_items - 1):
        raw = ctx.items.ids[n]
        assert ctx.info.titles[n] == f"title of {raw}" and ctx.info.categories[n] == [f"cat-{raw}"]
        assert ctx.info.vectors[n, 0] == ids.index(raw)
    model.meta["item_ids"] = model.meta["item_ids"][:-1]
    with pytest.raises(ValueError, match="no item id map"):
        ModelContext.for_catalogue(model, ids, titles, cats)
