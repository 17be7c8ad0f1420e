"""GRU4Rec and BERT4Rec specifics: a GRU state never depends on a batch's padding, BERT4Rec
reads both directions and fills a [MASK] appended after the history, its cloze masking,
settings checked at create, new items grown without losing what was learned, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from directrec.data.dataset import Interactions
from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.models import create

SMALL = {"max_len": 20, "dim": 16, "batch_size": 64, "lr": 3e-3, "epochs": 2}


@pytest.fixture(scope="module")
def train(planted):
    return leave_one_out(planted.interactions).stage("valid")[0]


@pytest.fixture(scope="module")
def fitted(train):
    return {name: create(name, SMALL).fit(train) for name in ("gru4rec", "bert4rec")}


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_a_history_scores_the_same_alone_or_beside_a_longer_one(name, fitted, train):
    """Left padding added to fit a longer neighbour changes nothing: the GRU runs over real
    tokens only, the encoder masks padding out of attention."""
    model = fitted[name]
    h = Histories.from_interactions(train, np.arange(10))
    short = int(np.argmin(h.lengths()))
    row = Histories.from_lists([h[short][-3:]], model.n_items)
    both = Histories.from_lists([h[short][-3:], h[0]], model.n_items)
    torch.testing.assert_close(model.score(row)[0], model.score(both)[0], rtol=1e-5, atol=1e-5)


def test_bert4rec_fills_a_mask_after_the_history_and_reads_both_ways(fitted):
    model = fitted["bert4rec"]
    net = model.net
    h = Histories.from_lists([[3, 4, 5], [7]], model.n_items)
    seq = model._score_inputs(h)
    assert seq[:, -1].tolist() == [net.mask_id] * 2
    assert seq[0, -4:-1].tolist() == [4, 5, 6] and seq[1, -2].item() == 8
    # bidirectional: the first position's state changes with a later item (not so causally)
    a = torch.tensor([[4, 5, 6, net.mask_id]])
    b = torch.tensor([[4, 5, 9, net.mask_id]])
    with torch.no_grad():
        assert not torch.allclose(net(a)[0, 0], net(b)[0, 0])


def test_gru4rec_reads_only_the_past(fitted):
    net = fitted["gru4rec"].net
    a, b = torch.tensor([[4, 5, 6, 7]]), torch.tensor([[4, 5, 9, 7]])
    with torch.no_grad():
        torch.testing.assert_close(net(a)[0, :2], net(b)[0, :2])
        assert not torch.allclose(net(a)[0, 2], net(b)[0, 2])


def test_cloze_masking_hides_the_targets_and_always_masks_something(fitted):
    """Each real item is masked with chance mask_prob (never padding), every window masks at
    least one item, and with mask_last = 1 only the last item is masked."""
    model = fitted["bert4rec"]._copy(mask_last=0.0)
    seen: list[torch.Tensor] = []

    def spy(inp):
        seen.append(inp.clone())
        return model.net(inp)

    torch.manual_seed(0)
    w = torch.randint(1, model.n_items + 1, (400, 20))
    w[:200, :15] = 0  # short windows, left-padded
    w[0, :-1] = 0  # one item: nothing to mask by chance, so its only item is
    loss, n = model._batch_loss(spy, w)
    masked = seen[-1] == model.net.mask_id
    assert torch.isfinite(loss) and n == int(masked.sum())
    assert not (masked & (w == 0)).any() and masked.any(1).all()
    share = masked[200:].float().mean().item()
    assert abs(share - model.config.mask_prob) < 0.03
    model = model._copy(mask_last=1.0)
    model._batch_loss(spy, w)
    masked = seen[-1] == model.net.mask_id
    assert masked[:, -1].all() and not masked[:, :-1].any()


@pytest.mark.parametrize(
    ("name", "bad", "field"),
    [
        ("bert4rec", {"mask_prob": 0.0}, "mask_prob"),
        ("bert4rec", {"mask_last": 1.5}, "mask_last"),
        ("bert4rec", {"dim": 30, "heads": 4}, "heads"),
        ("gru4rec", {"layers": 0}, "layers"),
        ("gru4rec", {"dropout": 1.0}, "dropout"),
        ("gru4rec", {"max_len": 0}, "max_len"),
        ("bert4rec", {"max_len": 1}, "max_len"),  # one item and the [MASK] after it
    ],
)
def test_settings_are_checked_at_create(name, bad, field):
    with pytest.raises(ValueError, match=field):
        create(name, bad)


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_new_items_get_fresh_rows_and_keep_the_rest(name, fitted, train):
    model = fitted[name]
    grown = Interactions(
        np.append(train.user, 0),
        np.append(train.item, train.n_items + 2),
        n_users=train.n_users,
        n_items=train.n_items + 3,
    )
    new = model.update(grown, epochs=0)
    old_w, new_w = model.net.state_dict(), new.net.state_dict()
    assert new_w["item.weight"].shape[0] == train.n_items + 4
    for key, value in old_w.items():
        torch.testing.assert_close(new_w[key][: len(value)], value, msg=key)
    assert new.score(Histories.from_lists([[train.n_items + 2]], new.n_items)).shape[1] == (
        train.n_items + 3
    )


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_resume_is_exact(name, train, tmp_path):
    straight = create(name, {**SMALL, "epochs": 3}).fit(train)
    ckpt = str(tmp_path / "ckpt")
    create(name, {**SMALL, "epochs": 1, "checkpoint_dir": ckpt}).fit(train)
    resumed = create(name, {**SMALL, "epochs": 3, "checkpoint_dir": ckpt}).fit(train)
    assert len(resumed.meta["train_log"]) == 3
    for (k, a), b in zip(
        straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_an_epoch_is_deterministic_given_the_seed(name, train):
    a, b = (create(name, SMALL).fit(train) for _ in range(2))
    for (k, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
