"""CFGAN ranks by the generator's logits, so a saturated sigmoid cannot tie items."""

from __future__ import annotations

import torch

from directrec.data.histories import Histories
from directrec.models import create


def test_scores_keep_the_order_a_saturated_sigmoid_loses(planted):
    data = planted.interactions
    model = create("cfgan", {"hidden": 8, "epochs": 1, "batch_size": 64}).fit(data)
    n = model.n_items
    last = model.gen[-2]  # the output layer, before the sigmoid
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.linspace(20.0, 40.0, n))  # every sigmoid rounds to 1.0
    histories = Histories.from_interactions(data, [0, 1])
    assert torch.sigmoid(last.bias).eq(1.0).all()  # the ties the logits avoid
    scores = model.score(histories)
    assert (scores.diff(dim=1) > 0).all()
