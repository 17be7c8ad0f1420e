"""Transformer building blocks the sequence generators share (SASRec family, semantic-id),
plus the device helpers every torch model uses.

Sequences are left-padded token windows (0 = padding, item i = token i + 1), so the newest
item is always the last position whatever the batch's padding.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F
from torch import nn


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
    dev = torch.device(name)
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


# ----------------------------------------------------------------------------- blocks
class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x)); the attention
    pattern (causal or bidirectional) is the mask the caller passes. `attn_dropout` (default:
    `dropout`) drops attention weights; on a CPU it costs about as much as the rest of the
    block (one random draw per query-key pair), so a CPU recipe may turn it off. `mlp_ratio`
    sets the MLP's width (4 × dim as in GPT; 1 is the original SASRec's feed-forward)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        attn_dropout: float | None = None,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Linear(mlp_ratio * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (t.view(b, n, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        pa = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=pa)
        y = y.transpose(1, 2).reshape(b, n, d)
        x = x + F.dropout(self.proj(y), p, self.training)
        return x + self.mlp(self.ln2(x))
