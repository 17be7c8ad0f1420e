"""Shared Transformer pieces: the chunked full-softmax loss equals the plain one; the cheap
dropout drops at its rate and keeps the expectation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from directrec.models.transformer import dropout, full_softmax_ce


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunked_softmax_ce_matches_cross_entropy_and_its_gradients(chunk):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(150, 8, generator=g, requires_grad=True)
    table = torch.randn(41, 8, generator=g, requires_grad=True)  # row 0 = padding, as tied
    target = torch.randint(0, 40, (150,), generator=g)
    (F.cross_entropy(h @ table[1:].T, target) * 2.5).backward()
    want = (h.grad.clone(), table.grad.clone())
    h.grad = table.grad = None
    loss = full_softmax_ce(h, table[1:], target, chunk=chunk)
    (loss * 2.5).backward()  # a scale after the loss (as DDP's rank weighting) reaches both
    assert loss.item() == pytest.approx(F.cross_entropy(h @ table[1:].T, target).item(), 1e-5)
    torch.testing.assert_close(h.grad, want[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(table.grad, want[1], rtol=1e-5, atol=1e-7)
    assert table.grad[0].abs().sum() == 0  # the padding row gets nothing


def test_chunked_softmax_ce_is_stable_for_large_logits():
    """Logits in the hundreds (a sharp model) must not overflow the in-place softmax."""
    g = torch.Generator().manual_seed(6)
    h = (torch.randn(40, 8, generator=g) * 30).requires_grad_()
    table = (torch.randn(25, 8, generator=g) * 3).requires_grad_()
    target = torch.randint(0, 25, (40,), generator=g)
    F.cross_entropy(h @ table.T, target).backward()
    want = (h.grad.clone(), table.grad.clone())
    h.grad = table.grad = None
    loss = full_softmax_ce(h, table, target, chunk=16)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()
    assert loss.item() == pytest.approx(F.cross_entropy(h @ table.T, target).item(), 1e-4)
    torch.testing.assert_close(h.grad, want[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(table.grad, want[1], rtol=1e-4, atol=1e-6)


def test_dropout_drops_at_its_rate_scales_the_rest_and_passes_gradients():
    torch.manual_seed(7)
    x = torch.ones(200, 500, requires_grad=True)
    y = dropout(x, 0.3, training=True)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(0.3, abs=0.005)
    assert y[y != 0].unique().tolist() == pytest.approx([1 / 0.7])  # inverted scaling
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.7)  # the same mask backwards
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 1.0, training=True).abs().sum() == 0


def test_chunked_softmax_ce_stays_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(4)
    h = torch.randn(30, 8, generator=g)
    table = torch.randn(20, 8, generator=g)
    target = torch.randint(0, 20, (30,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = full_softmax_ce(h, table, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(F.cross_entropy(h @ table.T, target).item(), 1e-6)


def test_chunked_softmax_ce_of_no_positions_is_zero_with_zero_gradients():
    h = torch.zeros(0, 8, requires_grad=True)
    table = torch.randn(20, 8, requires_grad=True)
    loss = full_softmax_ce(h, table, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and table.grad.abs().sum() == 0


def test_pack_lays_each_window_once_and_a_packed_row_computes_each_window_as_alone():
    """Packed rows hold every window's real tokens exactly once, in order, with the
    positions the window has on its own; in eval mode the network's outputs at each
    window's tokens equal those of the window run alone (attention never crosses)."""
    from directrec.models.sasrec import SASRecNet, SASRecNetConfig
    from directrec.models.transformer import pack, trim_padding

    g = torch.Generator().manual_seed(5)
    n, lengths = 13, [13, 3, 5, 2, 13, 7, 9, 4, 2, 6, 1]
    windows = torch.zeros(len(lengths), n, dtype=torch.long)
    for i, m in enumerate(lengths):
        windows[i, n - m :] = torch.randint(1, 51, (m,), generator=g)
    tokens, segments, positions = pack(windows)
    assert len(tokens) < len(lengths) and tokens.shape[1] == n
    torch.manual_seed(0)
    net = SASRecNet(50, SASRecNetConfig(max_len=n - 1, dim=16, dropout=0.1)).eval()
    with torch.no_grad():
        packed = net(tokens[:, :-1], (segments[:, :-1], positions[:, :-1]))
        alone = net(trim_padding(windows)[:, :-1])
    for i, m in enumerate(lengths):
        where = (segments == i).nonzero()
        assert len(where) == m and (where[:, 0] == where[0, 0]).all()
        r, c = where[0].tolist()
        assert tokens[r, c : c + m].tolist() == windows[i, n - m :].tolist()
        if m > 1:
            torch.testing.assert_close(packed[r, c : c + m - 1], alone[i, n - m : n - 1])


def test_key_keep_mask_keeps_each_entry_with_probability_one_minus_p():
    from directrec.models.transformer import key_keep_mask

    shape = (40, 2, 50, 50)  # 200,000 entries: the kept share is within ±0.005 of 1 - p
    for p in (0.2, 0.5):
        torch.manual_seed(1)
        kept = key_keep_mask(shape, p, torch.device("cpu"))
        assert kept.shape == shape and kept.dtype == torch.bool
        assert abs(kept.float().mean().item() - (1 - p)) < 0.005
        torch.manual_seed(1)  # drawn from the global generator: a seed repeats it
        assert torch.equal(kept, key_keep_mask(shape, p, torch.device("cpu")))
    assert key_keep_mask(shape, 0.0, torch.device("cpu")).all()
    assert not key_keep_mask((3, 5), 1.0, torch.device("cpu")).any()  # odd sizes too


def test_drop_keys_masks_query_key_pairs_before_the_softmax():
    """In training, a DropKey block computes exactly the eval-mode block under the attention
    mask with the drawn pairs removed (a query always keeps itself); dropping every pair
    leaves each position attending only to itself."""
    from directrec.models.transformer import Block, causal_padding_mask, key_keep_mask

    b, n, d, heads = 3, 9, 16, 2
    g = torch.Generator().manual_seed(6)
    x = torch.randn(b, n, d, generator=g)
    keep = torch.ones(b, n, dtype=torch.bool)
    keep[0, :4] = False  # left padding in one row
    mask = causal_padding_mask(keep)
    eye = torch.eye(n, dtype=torch.bool)
    torch.manual_seed(0)
    block = Block(d, heads, dropout=0.0, attn_dropout=0.5, drop_keys=True)
    torch.manual_seed(7)
    trained = block.train()(x, mask)
    torch.manual_seed(7)
    kept = (key_keep_mask((b, heads, n, n), 0.5, torch.device("cpu")) | eye) & mask
    with torch.no_grad():
        want = block.eval()(x, kept)
        assert not torch.allclose(want, block(x, mask))  # pairs were dropped
    torch.testing.assert_close(trained, want)
    block.attn_dropout = 1.0
    with torch.no_grad():
        torch.testing.assert_close(block.train()(x, mask), block.eval()(x, eye.expand(b, 1, n, n)))
