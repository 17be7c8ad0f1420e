"""BERT4Rec: a bidirectional Transformer encoder over item-ID sequences trained to fill in
masked items (the cloze task; Sun et al. 2019), with full-softmax cross-entropy over the
masked positions (as Petrov & Macdonald 2022 train it to its reported strength).

Training: each real item of a window is replaced by the [MASK] token with probability
`mask_prob` (a window with none masked gets its last item masked); a `mask_last` share of
the windows instead has only its last item masked, the position inference fills. Every
position sees the whole window, before and after it.

Generation: the user's last `max_len - 1` items followed by [MASK]; the masked position's
scores over all items are the recommendation (seen items are masked by `recommend`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import nn

from directrec.data.histories import Histories
from directrec.models.sequence import SequenceConfig, SequenceModel, last_windows
from directrec.models.settings import Checks, setting
from directrec.models.transformer import (
    ItemTrunk,
    TrunkConfig,
    full_softmax_ce,
    padding_mask,
    trim_padding,
)


@dataclasses.dataclass
class BERT4RecNetConfig(TrunkConfig):
    """The bidirectional trunk's shape (`TrunkConfig`, BERT4Rec's own defaults)."""

    dropout: float = setting(0.1, "dropout on embeddings, attention and residual paths")
    # DropKey (query-key pairs masked before the softmax) lets the fused attention kernel
    # run the attention dropout: half the cost of a block on a CPU (see transformer.Block)
    drop_keys: bool = setting(
        True, "apply the attention dropout as DropKey (masked before the softmax): cheaper"
    )

    def checks(self) -> Checks:
        # the last position is always [MASK]: at least one item before it
        return {"max_len": (self.max_len >= 2, ">= 2 (one item and the [MASK] after it)")}


class BERT4RecNet(ItemTrunk):
    """Item + position embeddings → bidirectional blocks → final norm (`ItemTrunk`); scores
    are dot products with the item embeddings. n_items + 1 is [MASK], whose embedding is a
    parameter of its own (so new items can be added after it). Sequences are left-padded,
    positions right-aligned: the newest token is always position max_len - 1."""

    def __init__(self, n_items: int, cfg: BERT4RecNetConfig) -> None:
        super().__init__(n_items, cfg, mask_token=True)

    @property
    def mask_id(self) -> int:
        return self.n_items + 1

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, n] tokens (left-padded, [MASK] = `mask_id`) → hidden states [B, n, dim]."""
        n = seq.shape[1]
        masked = seq == self.mask_id
        x = self.item(seq.masked_fill(masked, 0))
        x = torch.where(masked.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        pos = torch.arange(self.max_len - n, self.max_len, device=seq.device)
        return self.run_blocks(
            x * math.sqrt(self.dim) + self.pos(pos), seq > 0, padding_mask(seq > 0)
        )

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores over all items."""
        return h @ self.item.weight[1:].T


class BERT4Rec(SequenceModel):
    name = "bert4rec"
    summary = "BERT4Rec: bidirectional Transformer trained to fill in masked items (cloze)"

    @dataclasses.dataclass
    class Config(BERT4RecNetConfig, SequenceConfig):
        """The network (`BERT4RecNetConfig`) and how it trains: the masking here, the
        rest in `SequenceConfig`."""

        part: ClassVar[str] = "training"  # of the settings declared here

        mask_prob: float = setting(0.2, "chance that each item of a training window is masked")
        mask_last: float = setting(
            0.1, "share of training windows with only their last item masked (as inference)"
        )

        def checks(self) -> Checks:
            return {
                "mask_prob": (0.0 < self.mask_prob <= 1.0, "in (0, 1]"),
                "mask_last": (0.0 <= self.mask_last <= 1.0, "in [0, 1]"),
            }

    def _build(self) -> BERT4RecNet:
        return BERT4RecNet(self.n_items, BERT4RecNetConfig.of(self.config))

    def _batch_loss(self, module: nn.Module, w: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Cross-entropy of the masked positions' original items (the cloze task)."""
        c, w = self.config, trim_padding(w)
        real = w > 0
        picked = (torch.rand(w.shape, device=w.device) < c.mask_prob) & real
        last = torch.zeros_like(real)
        last[:, -1] = True  # left-padded: the last column is every row's newest item
        only_last = (torch.rand(len(w), device=w.device) < c.mask_last).unsqueeze(1)
        none = ~picked.any(1, keepdim=True)
        picked = torch.where(only_last | none, last, picked)
        inp = w.masked_fill(picked, self.net.mask_id)
        h = module(inp)[picked]
        loss = full_softmax_ce(h.float(), self.net.item.weight[1:], w[picked] - 1)
        return loss, int(picked.sum())

    def _score_inputs(self, histories: Histories) -> torch.Tensor:
        """The last `max_len - 1` items, then [MASK] in the position to fill."""
        seq = last_windows(histories, self.config.max_len - 1)
        mask = torch.full((len(seq), 1), self.n_items + 1, dtype=seq.dtype)
        return torch.cat([seq, mask], 1)
