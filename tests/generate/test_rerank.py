"""MMR re-ranking and filters, checked against hand-computed picks."""

from __future__ import annotations

import numpy as np

from directrec.generate.rerank import category_filter, mmr


def test_mmr_by_hand():
    # items 0 and 1 are near duplicates, 2 is orthogonal; scores 1.0, 0.9, 0.5
    v = np.array([[1.0, 0.0], [0.995, 0.0998], [0.0, 1.0]])
    items, scores = np.array([0, 1, 2]), np.array([1.0, 0.9, 0.5])
    assert mmr(items, scores, v, 3, 0.0)[0].tolist() == [0, 1, 2]  # knob 0: model order
    # knob 0.5: after 0, item 1 gains 0.5*0.8 - 0.5*0.995 < 0 = item 2's 0.5*0 - 0.5*0
    assert mmr(items, scores, v, 3, 0.5)[0].tolist() == [0, 2, 1]
    picked, picked_scores = mmr(items, scores, v, 2, 0.5)
    assert picked.tolist() == [0, 2] and picked_scores.tolist() == [1.0, 0.5]
    assert mmr(np.array([2, -1]), np.array([1.0, -np.inf]), v, 5, 0.5)[0].tolist() == [2]


def test_category_filter():
    cats = [["a"], ["b", "c"], []]
    assert category_filter(np.array([0, 1, 2, -1]), cats, {"c"}).tolist() == [
        True,
        False,
        True,
        False,
    ]
    assert category_filter(np.array([0, 1]), cats, set()).all()
