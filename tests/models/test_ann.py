"""The IVF index (models/ann.py) against brute force on small generated tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from directrec.models.ann import IVFIndex


def clustered(n: int, dim: int, groups: int, seed: int) -> torch.Tensor:
    """`n` vectors around `groups` random centres (what a trained item table looks like
    more than uniform noise does)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(groups, dim, generator=g) * 2
    member = torch.randint(0, groups, (n,), generator=g)
    return centres[member] + 0.3 * torch.randn(n, dim, generator=g)


def test_every_item_is_in_exactly_one_list_with_its_own_vector():
    table = clustered(500, 8, 10, 0)
    index = IVFIndex.build(table, seed=0)
    assert index.n_lists == round(500**0.5)
    assert sorted(index.items.tolist()) == list(range(500))
    torch.testing.assert_close(index.vectors, table[index.items])
    sizes = index.offsets.diff()
    for lst in range(index.n_lists):  # each non-empty list's centroid is its members' mean
        lo, hi = index.offsets[lst], index.offsets[lst + 1]
        if sizes[lst]:
            torch.testing.assert_close(index.centroids[lst], index.vectors[lo:hi].mean(0))


def test_probing_every_list_is_the_exact_search_and_normaliser():
    table = clustered(400, 8, 6, 1)
    index = IVFIndex.build(table, seed=1)
    q = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    exclude = [
        np.array([0, 5, 7]),
        np.zeros(0, np.int64),
        np.arange(390),
        np.array([3]),
        np.zeros(0, np.int64),
    ]
    items, scores, log_norm = index.search(q, 20, index.n_lists, exclude)
    logits = q @ table.T
    torch.testing.assert_close(log_norm, torch.logsumexp(logits, 1))
    for r in range(5):
        ranked = logits[r].clone()
        ranked[torch.from_numpy(exclude[r])] = -torch.inf
        top = torch.topk(ranked, 20)
        found = torch.isfinite(top.values)
        assert items[r, : int(found.sum())].tolist() == top.indices[found].tolist()
        torch.testing.assert_close(scores[r, : int(found.sum())], top.values[found])
    # row 2 excluded all but 10 items: the rest is padding
    assert (items[2, 10:] == -1).all() and torch.isinf(scores[2, 10:]).all()
    assert not set(items[2, :10].tolist()) & set(exclude[2].tolist())


@pytest.mark.parametrize("probe", [1, 3, 8])
def test_the_estimated_normaliser_is_a_lower_bound_above_the_probed_items_alone(probe):
    table = clustered(900, 16, 12, 3)
    index = IVFIndex.build(table, seed=3)
    q = torch.randn(8, 16, generator=torch.Generator().manual_seed(4)) * 0.5
    none = [np.zeros(0, np.int64)] * 8
    _, _, log_norm = index.search(q, 900, probe, none)
    exact = torch.logsumexp(q @ table.T, 1)
    best = torch.topk(q @ index.centroids.T, probe, 1).indices
    for r in range(8):
        probed = torch.cat(
            [index.items[index.offsets[i] : index.offsets[i + 1]] for i in best[r].tolist()]
        )
        alone = torch.logsumexp(q[r] @ table[probed].T, 0)
        assert alone - 1e-5 <= log_norm[r] <= exact[r] + 1e-5


def test_a_few_lists_find_most_of_the_best_items_on_clustered_vectors():
    table = clustered(4000, 16, 40, 5)
    index = IVFIndex.build(table, seed=5)  # 63 lists
    q = table[torch.randint(0, 4000, (50,), generator=torch.Generator().manual_seed(6))]
    none = [np.zeros(0, np.int64)] * 50
    items, _, _ = index.search(q, 10, 6, none)  # about a tenth of the items
    exact = torch.topk(q @ table.T, 10, 1).indices
    recall = np.mean(
        [len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(items, exact, strict=True)]
    )
    assert recall >= 0.9


def test_lists_left_empty_are_never_probed():
    table = clustered(60, 4, 3, 7)
    index = IVFIndex.build(table, seed=7)
    # make lists 0 and 1 empty, with centroids every query prefers
    index.centroids[:2] = 100.0
    index.offsets[1:3] = 0
    q = torch.ones(4, 4)
    items, _, log_norm = index.search(q, 5, 2, [np.zeros(0, np.int64)] * 4)
    assert (items >= 0).all()  # two non-empty lists were searched instead
    assert torch.isfinite(log_norm).all()
