"""Candidates: each row's best items with scores, as models return them."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from directrec.models.candidates import Candidates, mask_rows

INF = math.inf


def test_of_sorts_rows_best_first_and_moves_pads_last():
    c = Candidates.of(torch.tensor([[4, -1, 2, 7]]), torch.tensor([[0.5, 9.0, 2.0, -INF]]))
    assert c.items.tolist() == [[2, 4, -1, -1]]
    assert c.scores.tolist() == [[2.0, 0.5, -INF, -INF]]


def test_from_scores_lists_the_kept_items_after_the_top_k_they_tie_with():
    scores = torch.tensor([[3.0, 1.0, 2.0, 1.0, 1.0, 0.0], [5.0, 4.0, -INF, -INF, -INF, -INF]])
    plain = Candidates.from_scores(scores, 2)
    assert plain.width == 2 and plain.items[0].tolist() == [0, 2]
    keep = torch.tensor([[5, 0], [2, -1]])
    kept = Candidates.from_scores(scores, 3, keep=keep)
    top3 = kept.items[0, :3].tolist()
    assert top3[:2] == [0, 2] and top3[2] in (1, 3, 4)  # item 0 is listed once
    assert kept.items[0, 3:].tolist() == [5, -1] and kept.scores[0, 3] == 0.0
    # the second row: two items, then a kept item at -inf is no candidate
    assert kept.items[1].tolist() == [0, 1, -1, -1, -1]


def test_without_drops_a_rows_items_and_keeps_the_rest_in_order():
    c = Candidates.of(
        torch.tensor([[1, 2, 3], [1, 2, 3]]), torch.tensor([[3.0, 2, 1], [3.0, 2, 1]])
    )
    out = c.without(sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 1, 0, 1]])))
    assert out.items.tolist() == [[1, 3, -1], [2, -1, -1]]
    assert out.scores[0].tolist() == [3.0, 1.0, -INF]


def test_stack_dense_and_head():
    a = Candidates.of(torch.tensor([[2, 0]]), torch.tensor([[1.0, 2.0]]))
    b = Candidates.of(torch.tensor([[1, 3, 2]]), torch.tensor([[1.0, 3.0, 2.0]]))
    both = Candidates.stack([(np.array([1]), a), (np.array([0]), b)], 2)
    assert both.items.tolist() == [[3, 2, 1], [0, 2, -1]]
    dense = both.dense(4)
    assert dense[1].tolist() == [2.0, -INF, 1.0, -INF]
    assert both.head(1).items.tolist() == [[3], [0]]


def test_mask_rows_sets_minus_inf_in_place():
    scores = torch.zeros(2, 3)
    mask_rows(scores, sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 1]])))
    assert scores.tolist() == [[-INF, 0, 0], [0, 0, -INF]]
    mask_rows(scores, None)  # nothing to mask
