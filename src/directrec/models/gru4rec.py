"""GRU4Rec: a recurrent network over item-ID sequences that predicts the next item at every
position (Hidasi et al. 2016), in its strong modern form: trained with full-softmax
cross-entropy over all items (Hidasi & Czapp 2023; Klenitskiy & Vasilev 2023), output
scores tied to the input item embeddings.

Generation: one pass over the user's last `max_len` items; the last state's scores over all
items are the recommendation (seen items are masked by `recommend`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from directrec.data.histories import Histories
from directrec.models.sequence import SequenceConfig, SequenceModel, last_windows
from directrec.models.settings import Checks, NetworkConfig, setting
from directrec.models.transformer import Dropout, full_softmax_ce, trim_padding


@dataclasses.dataclass
class GRU4RecNetConfig(NetworkConfig):
    """The GRU's shape."""

    max_len: int = setting(200, "most recent items the model reads (context length)")
    dim: int = setting(64, "embedding and hidden width")
    layers: int = setting(1, "stacked GRU layers")
    dropout: float = setting(0.2, "dropout on the item embeddings and the GRU's states")

    def checks(self) -> Checks:
        return {
            "max_len": (self.max_len >= 1, ">= 1"),
            "dim": (self.dim >= 1, ">= 1"),
            "layers": (self.layers >= 1, ">= 1"),
            "dropout": (0.0 <= self.dropout < 1.0, "in [0, 1)"),
        }


class GRU4RecNet(nn.Module):
    """Item embeddings → GRU → a linear map back to the embedding space; scores are dot
    products with the item embeddings. Token 0 is padding; item i is token i + 1."""

    def __init__(self, n_items: int, cfg: GRU4RecNetConfig) -> None:
        super().__init__()
        dim, layers, dropout = cfg.dim, cfg.layers, cfg.dropout
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.drop = Dropout(dropout)
        self.gru = nn.GRU(dim, dim, layers, batch_first=True, dropout=dropout if layers > 1 else 0)
        self.out = nn.Linear(dim, dim)
        nn.init.normal_(self.item.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, n] left-padded tokens → hidden states [B, n, dim] at the same positions
        (zeros at padding). The GRU runs over each row with its real tokens moved to the
        front, so a state depends on that row's items only, never on how much padding its
        batch carries (the states past a row's end are dropped). A packed sequence would do
        the same, but its backward pass on a CPU costs time quadratic in the length."""
        n = seq.shape[1]
        keep = seq > 0
        cols = torch.arange(n, device=seq.device)
        shift = (n - keep.sum(1)).unsqueeze(1)
        first = seq.gather(1, (cols + shift) % n)  # the real tokens moved to the front
        h, _ = self.gru(self.drop(self.item(first)))
        h = self.out(self.drop(h))
        back = ((cols - shift) % n).unsqueeze(-1).expand(-1, -1, h.shape[-1])
        return h.gather(1, back) * keep.unsqueeze(-1)  # back to the left-padded layout

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores over all items."""
        return h @ self.item.weight[1:].T


class GRU4Rec(SequenceModel):
    name = "gru4rec"
    summary = "GRU4Rec: a GRU over item sequences, full-softmax cross-entropy on the next item"
    window_extra = 1  # each window holds max_len inputs and the item after them
    bf16_ok = False  # the recurrent kernels stay in float32

    @dataclasses.dataclass
    class Config(GRU4RecNetConfig, SequenceConfig):
        """The network (`GRU4RecNetConfig`) and how it trains (`SequenceConfig`)."""

    def _build(self) -> GRU4RecNet:
        return GRU4RecNet(self.n_items, GRU4RecNetConfig.of(self.config))

    def _batch_loss(self, module: nn.Module, w: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Next-item cross-entropy at every position that has a next item."""
        w = trim_padding(w)
        inp, tgt = w[:, :-1], w[:, 1:]
        mask = (inp > 0) & (tgt > 0)
        h = module(inp)[mask]
        return full_softmax_ce(h.float(), self.net.item.weight[1:], tgt[mask] - 1), int(mask.sum())

    def _score_inputs(self, histories: Histories) -> torch.Tensor:
        return last_windows(histories, self.config.max_len)
