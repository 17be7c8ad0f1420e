"""SVD++ against Koren's equations on an example small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from directrec.models.svdpp import SVDppNet


@pytest.fixture
def net() -> SVDppNet:
    """Two users, five items, two factors. User 0 rated items 0-3 (|N(u)|^-½ = 1/2),
    user 1 rated item 4 only."""
    seen = sp.csr_matrix(
        (np.ones(5, dtype=np.float32), ([0, 0, 0, 0, 1], [0, 1, 2, 3, 4])), shape=(2, 5)
    )
    net = SVDppNet(seen, factors=2, mean=3.5)
    with torch.no_grad():
        net.bu.weight.copy_(torch.tensor([[0.1], [-0.2]]))
        net.bi.weight.copy_(torch.tensor([[0.3], [0.0], [0.0], [0.0], [-0.4]]))
        net.p.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        net.q.weight.copy_(
            torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.5, -1.0]])
        )
        net.y.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 4.0], [0, 0], [0, 0], [1.0, 3.0]]))
    return net


def test_prediction_follows_the_svdpp_formula(net):
    pred, _ = net(torch.tensor([0, 0, 1]), torch.tensor([4, 0, 4]))
    # user 0: p + (y0 + y1 + y2 + y3) / 2 = (1, 0) + (1, 2) = (2, 2)
    # (0, 4): 3.5 + 0.1 - 0.4 + (2, 2)·(0.5, -1) = 3.2 - 1 = 2.2
    # (0, 0): 3.5 + 0.1 + 0.3 + (2, 2)·(1, 1) = 7.9
    # user 1: p + y4 / 1 = (1, 4); (1, 4): 3.5 - 0.2 - 0.4 + (1, 4)·(0.5, -1) = 2.9 - 3.5
    torch.testing.assert_close(pred, torch.tensor([2.2, 7.9, -0.6]))


def test_penalty_shrinks_every_y_of_the_user_per_rating(net):
    """λ-term per rating: b_u² + b_i² + ‖p_u‖² + ‖q_i‖² + Σ_{j∈N(u)} ‖y_j‖², averaged."""
    _, penalty = net(torch.tensor([0, 1]), torch.tensor([4, 4]))
    r0 = 0.01 + 0.16 + 1.0 + 1.25 + (4.0 + 16.0)  # user 0 rated items 0-3
    r1 = 0.04 + 0.16 + 1.0 + 1.25 + 10.0  # user 1 rated item 4
    assert penalty.item() == pytest.approx((r0 + r1) / 2, rel=1e-6)


def test_penalty_gradient_reaches_only_the_users_items(net):
    """y_4 is in no batch user's N(u) and must not be shrunk by this batch."""
    _, penalty = net(torch.tensor([0]), torch.tensor([0]))
    penalty.backward()
    grad = net.y.weight.grad
    torch.testing.assert_close(grad[:2], 2 * net.y.weight[:2].detach())  # d‖y‖²/dy
    assert grad[4].abs().sum() == 0


def test_folding_keeps_every_prediction(net):
    users, items = torch.arange(2).repeat_interleave(5), torch.arange(5).repeat(2)
    with torch.no_grad():
        before, _ = net(users, items)
        after, _ = net.fold()(users, items)
    torch.testing.assert_close(after, before)
