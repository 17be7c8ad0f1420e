"""Transformer building blocks the sequence generators share (SASRec family, semantic-id),
plus the device helpers every torch model uses.

Sequences are left-padded token windows (0 = padding, item i = token i + 1), so the newest
item is always the last position whatever the batch's padding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from directrec.models.settings import Checks, NetworkConfig, setting


# ----------------------------------------------------------------------------- devices
def resolve_device(name: str = "auto") -> torch.device:
    """`auto` = a CUDA device if there is one (under torchrun: the one of this local
    rank), else the CPU; also `cpu`, `cuda`, `cuda:N`. A CUDA device asked for on a machine
    without one is a clear error."""
    local = os.environ.get("LOCAL_RANK")  # under torchrun: one GPU per local process
    if name in ("", "auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(local) if local is not None else 0)
    if name in ("", "auto"):
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from e
    if dev.type not in ("cpu", "cuda", "mps"):  # e.g. meta: tensors there hold no data
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device here")
    return dev


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device` when `enabled` (CPU and CUDA both support it)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------------- masks
def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every row (keeps at least one)."""
    real = (tokens > 0).any(0).nonzero()
    return tokens[:, int(real.min()) :] if len(real) else tokens[:, -1:]


def causal_padding_mask(keep: torch.Tensor) -> torch.Tensor:
    """[B, 1, n, n] boolean attention mask: each position sees earlier real tokens and
    always itself (so no row is fully masked). `keep` [B, n] marks real tokens."""
    n = keep.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=keep.device).tril()
    eye = torch.eye(n, dtype=torch.bool, device=keep.device)
    return ((causal & keep[:, None, :]) | eye).unsqueeze(1)


def padding_mask(keep: torch.Tensor) -> torch.Tensor:
    """[B, 1, n, n] mask for a bidirectional encoder: every position sees the real tokens
    and itself."""
    n = keep.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=keep.device)
    return (keep[:, None, :] | eye).unsqueeze(1)


def pack(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded windows [B, n] → packed rows (tokens, segments, positions), each [R, n]:
    the windows' real tokens laid side by side (first-fit, longest first), so a batch of
    random users costs about its real tokens instead of B × n. `segments` numbers each
    window's tokens (-1 = padding); `positions` count back from each window's end as in
    the window (its last token gets n - 1, capped at n - 2 so a packed row's inputs use the
    same table as the unpacked window's)."""
    n = windows.shape[1]
    lengths = (windows > 0).sum(1).tolist()
    room: list[int] = []  # free columns per row
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    at = [(0, 0)] * len(lengths)
    for i in order:
        m = lengths[i]
        r = next((j for j, free in enumerate(room) if free >= m), len(room))
        if r == len(room):
            room.append(n)
        at[i] = (r, n - room[r])
        room[r] -= m
    tokens = torch.zeros(len(room), n, dtype=windows.dtype)
    segments = torch.full((len(room), n), -1, dtype=torch.long)
    positions = torch.zeros(len(room), n, dtype=torch.long)
    src = windows.cpu()
    for i, (r, o) in enumerate(at):
        m = lengths[i]
        tokens[r, o : o + m] = src[i, n - m :]
        segments[r, o : o + m] = i
        positions[r, o : o + m] = torch.arange(n - m, n).clamp(max=n - 2)
    dev = windows.device
    return tokens.to(dev), segments.to(dev), positions.to(dev)


def segment_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """[B, 1, n, n] mask for packed rows: each token sees earlier tokens of its own segment
    and itself (padding sees only itself, so no row is fully masked)."""
    same = (segments[:, :, None] == segments[:, None, :]).unsqueeze(1)
    return causal_padding_mask(segments >= 0) & same


# ----------------------------------------------------------------------------- blocks
def key_keep_mask(shape: tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """Boolean mask of `shape`, each entry True with probability 1 - p (to 1/65536), drawn
    from torch's global generator as random 16-bit words: four entries per 64-bit draw, about
    six times cheaper on a CPU than `torch.rand` of the same shape."""
    if p >= 1.0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    numel = math.prod(shape)
    words = torch.randint(
        -(2**63), 2**63 - 1, ((numel + 3) // 4,), dtype=torch.int64, device=device
    )
    bits = words.view(torch.int16)[:numel].view(shape)
    return bits >= min(round(p * 65536), 65535) - 32768  # an int16 threshold


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout like `F.dropout`, with the mask drawn by `key_keep_mask` on a CPU:
    the same distribution (p to 1/65536) at about a quarter of the cost of torch's
    Bernoulli draw (bench/epoch_cost.py). CUDA keeps torch's fused kernel."""
    if not training or not 0.0 < p < 1.0 or x.is_cuda:
        return F.dropout(x, p, training)
    keep = key_keep_mask(tuple(x.shape), p, x.device)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """`nn.Dropout` drawn with `dropout` above."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x)); the attention
    pattern (causal or bidirectional) is the mask the caller passes. `attn_dropout` (default:
    `dropout`) regularises attention. With `drop_keys` false it drops attention weights
    (standard dropout after the softmax); on a CPU that forces torch's unfused attention, about
    4× the cost of the fused kernel. With `drop_keys` it masks each query-key pair before the
    softmax instead (DropKey, Li et al. CVPR 2023: the kept weights renormalise, a query always
    sees itself), which the fused kernel runs as part of the mask. `mlp_ratio` sets the MLP's
    width (4 × dim as in GPT; 1 is the original SASRec's feed-forward)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        attn_dropout: float | None = None,
        mlp_ratio: int = 4,
        drop_keys: bool = False,
    ) -> None:
        super().__init__()
        if heads < 1 or dim % heads:  # else every forward pass fails on the head split
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.dropout, self.drop_keys = heads, dropout, drop_keys
        self.attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Linear(mlp_ratio * dim, dim),
            Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (t.view(b, n, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        pa = self.attn_dropout if self.training else 0.0
        if pa > 0 and self.drop_keys:
            kept = key_keep_mask((b, self.heads, n, n), pa, x.device)
            kept.diagonal(dim1=-2, dim2=-1).fill_(True)  # a query always keeps itself
            mask, pa = kept.logical_and_(mask), 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=pa)
        y = y.transpose(1, 2).reshape(b, n, d)
        x = x + dropout(self.proj(y), p, self.training)
        return x + self.mlp(self.ln2(x))


@dataclasses.dataclass
class TrunkConfig(NetworkConfig):
    """The shape of an item-ID Transformer trunk (`ItemTrunk`)."""

    max_len: int = setting(200, "most recent items the model reads (context length)")
    dim: int = setting(64, "embedding and hidden width")
    heads: int = setting(2, "attention heads (must divide dim)")
    layers: int = setting(2, "Transformer blocks")
    dropout: float = setting(0.2, "dropout on embeddings and residual paths")
    attn_dropout: float = setting(-1.0, "dropout on attention weights; < 0 = the same as dropout")
    mlp_ratio: int = setting(4, "MLP width / dim (4 = GPT's and BERT's; 1 = the original SASRec's)")
    # Apply attn_dropout as DropKey (query-key pairs masked before the softmax) instead of
    # dropping weights after it: the fused attention kernel then runs it, 2.4× cheaper for
    # the attention on a CPU (bench/epoch_cost.py; `Block`)
    drop_keys: bool = setting(
        False, "apply attn_dropout as DropKey (masked before the softmax): cheaper on a CPU"
    )

    def checks(self) -> Checks:
        return {
            "max_len": (self.max_len >= 1, ">= 1"),
            "dim": (self.dim >= 1, ">= 1"),
            "heads": (
                self.heads >= 1 and self.dim % self.heads == 0,
                f"≥ 1 and divide dim ({self.dim})",
            ),
            "layers": (self.layers >= 1, ">= 1"),
            "dropout": (0.0 <= self.dropout < 1.0, "in [0, 1)"),
            "attn_dropout": (self.attn_dropout < 1.0, "< 1 (< 0 = the same as dropout)"),
            "mlp_ratio": (self.mlp_ratio >= 1, ">= 1"),
        }


class ItemTrunk(nn.Module):
    """What the item-ID Transformers share (SASRec, BERT4Rec): an item embedding (token 0 =
    padding, item i = token i + 1), learned positions, `layers` blocks and a final norm.
    Embeddings start at std dim^-½ (they are scaled by √dim on input); `mask_token` adds a
    [MASK] embedding of its own. The subclass's `forward` chooses the attention pattern and
    how the input tokens are embedded."""

    def __init__(self, n_items: int, cfg: TrunkConfig, mask_token: bool = False) -> None:
        super().__init__()
        dim = cfg.dim
        self.n_items, self.dim, self.max_len = n_items, dim, cfg.max_len
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        if mask_token:
            self.mask_token = nn.Parameter(torch.randn(dim) * dim**-0.5)
        self.pos = nn.Embedding(cfg.max_len, dim)
        self.drop = Dropout(cfg.dropout)
        attn = None if cfg.attn_dropout < 0 else cfg.attn_dropout
        self.blocks = nn.ModuleList(
            Block(dim, cfg.heads, cfg.dropout, attn, cfg.mlp_ratio, cfg.drop_keys)
            for _ in range(cfg.layers)
        )
        self.ln = nn.LayerNorm(dim)
        nn.init.normal_(self.item.weight, std=dim**-0.5)
        nn.init.normal_(self.pos.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def run_blocks(self, x: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Embedded tokens x [B, n, dim] (`keep`: the real ones) → hidden states."""
        x = self.drop(x) * keep.unsqueeze(-1)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)


# ----------------------------------------------------------------------------- losses
class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of `h @ weight.T` against `target`, with both gradients computed
    chunk by chunk in the forward pass (the loss is the graph's end, so they are final up to
    the incoming scale). The [N, items] logits never exist whole: one [chunk, items] buffer
    is reused for every chunk's logits, softmax and gradient, all in place, so a step maps
    and zeroes no fresh memory (the allocations cost as much as the arithmetic on a CPU)."""

    @staticmethod
    def forward(ctx, h, weight, target, chunk):  # type: ignore[override]
        n = len(h)
        grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
        buf = h.new_empty(min(chunk, n), len(weight))
        total = h.new_zeros((), dtype=torch.float64)
        for s in range(0, n, chunk):
            hc, tc = h[s : s + chunk], target[s : s + chunk]
            p = torch.mm(hc, weight.T, out=buf[: len(hc)])  # logits
            top = p.amax(1, keepdim=True)
            z = p.sub_(top).exp_().sum(1, keepdim=True)  # p = exp(logits - top)
            picked = (hc * weight[tc]).sum(1)  # the targets' logits
            total += (top.squeeze(1) + z.log().squeeze(1) - picked).sum().double()
            p.div_(z * n)  # softmax / n
            p[torch.arange(len(tc), device=p.device), tc] -= 1.0 / n
            torch.mm(p, weight, out=grad_h[s : s + chunk])
            grad_w.addmm_(p.T, hc)
        ctx.save_for_backward(grad_h, grad_w)
        return (total / n).to(h.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad, grad_w * grad, None, None


def full_softmax_ce(
    h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, chunk: int = 512
) -> torch.Tensor:
    """Mean full-softmax cross-entropy of scores `h @ weight.T` [N, V] against `target`
    (indices into V's rows); equal to `F.cross_entropy(h @ weight.T, target)` with its
    gradients, in well under half its time on a 2-core CPU (bench/epoch_cost.py: 0.36 s against
    0.95 s for an ML-1M step) and without the [N, V] logits in memory. Only first-order gradients."""
    if len(h) == 0:
        return (h.sum() + weight.sum()) * 0.0
    with torch.autocast(h.device.type, enabled=False):  # float32 logits, as F.cross_entropy
        return _ChunkedSoftmaxCE.apply(h.float(), weight.float(), target, chunk)
