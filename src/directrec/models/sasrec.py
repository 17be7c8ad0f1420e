"""SASRec family: a decoder-only causal Transformer over item-ID sequences that writes the
next item at every position (Kang & McAuley 2018; loss variants after Klenitskiy & Vasilev
2023 and Petrov & Macdonald 2023).

Three training losses over the same network:
- `ce`: full softmax cross-entropy over all items (`sasrec-ce`, our ID generator);
- `sampled`: softmax over in-batch targets + uniform negatives, logQ-corrected (for
  catalogues too large for a full softmax);
- `bce`: the original recipe, one random negative per position (`sasrec`, a baseline).

Generation: one forward pass over the user's last `max_len` items; the last position's
scores over all items are the recommendation (seen items are masked by `recommend`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models import privacy
from directrec.models.base import Validator
from directrec.models.sequence import BatchLoss, SequenceConfig, SequenceModel, last_windows
from directrec.models.settings import Checks, setting
from directrec.models.training import EpochRun, make_optimizer, train_by_epochs
from directrec.models.transformer import (
    ItemTrunk,
    TrunkConfig,
    causal_padding_mask,
    full_softmax_ce,
    pack,
    segment_causal_mask,
    trim_padding,
)


# ----------------------------------------------------------------------------- network
@dataclasses.dataclass
class SASRecNetConfig(TrunkConfig):
    """The causal trunk's shape (`TrunkConfig`) and how its output scores items."""

    # Score items by cosine / temperature instead of the dot product (0 = dot product);
    # HSTU's ML-1M recipe scores this way at 0.05
    temperature: float = setting(
        0.0, "score by cosine / temperature instead of the dot product (0 = dot product)"
    )

    def checks(self) -> Checks:
        return {"temperature": (self.temperature >= 0, ">= 0 (0 = dot product)")}


class SASRecNet(ItemTrunk):
    """Item + position embeddings → causal blocks → final norm (`ItemTrunk`). Sequences are
    left-padded so the newest item is always last."""

    def __init__(self, n_items: int, cfg: SASRecNetConfig) -> None:
        super().__init__(n_items, cfg)
        self.temperature = cfg.temperature

    def forward(
        self, seq: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """seq [B, n] tokens (left-padded) → hidden states [B, n, dim]. With `packed` =
        (segments, positions) from `transformer.pack`, a row holds several windows and each
        token attends only within its own."""
        n = seq.shape[1]
        if packed is None:
            keep = seq > 0
            # Positions are right-aligned: the newest item is always position max_len - 1,
            # however much left padding a batch has trimmed.
            pos = torch.arange(self.max_len - n, self.max_len, device=seq.device)
            mask = causal_padding_mask(keep)
        else:
            segments, pos = packed
            keep = segments >= 0
            mask = segment_causal_mask(segments)
        return self.run_blocks(self.item(seq) * math.sqrt(self.dim) + self.pos(pos), keep, mask)

    def head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, item rows incl. padding row 0) whose dot products are the scores: tied
        input/output embeddings, or with `temperature` > 0 their cosine / temperature (both
        sides L2-normalised, as HSTU scores items), which caps every logit at 1/temperature."""
        if self.temperature <= 0:
            return h, self.item.weight
        w = F.normalize(self.item.weight, dim=-1)
        return F.normalize(h, dim=-1) / self.temperature, w

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores over all items."""
        q, w = self.head(h)
        return q @ w[1:].T


# ----------------------------------------------------------------------------- model
class SASRec(SequenceModel):
    name = "sasrec"
    summary = "SASRec: causal Transformer over item sequences (BCE, sampled or CE loss)"
    window_extra = 1  # each window holds max_len inputs and the item after them

    @dataclasses.dataclass
    class Config(SASRecNetConfig, SequenceConfig):
        """The network (`SASRecNetConfig`) and how it trains: the loss and its batches
        here, the rest in `SequenceConfig`."""

        part: ClassVar[str] = "training"  # of the settings declared here
        private: ClassVar[bool] = True  # DP-SGD through `privacy.PrivateSteps`

        loss: str = setting(
            "bce",
            "bce (one negative per position) | ce (full softmax) | sampled (logQ-corrected sampled softmax)",
        )
        negatives: int = setting(512, "uniform negatives per position for loss=sampled")
        # Random batches whose windows are packed side by side into rows (attention stays
        # within each window): random batches' learning at about the compute of their real
        # tokens. The default: at the same cost per epoch it trains the better model
        # (see docs/CHANGELOG.md).
        pack: bool = setting(True, "random batches with windows packed side by side into rows")
        # With pack=false: padding-aware batching (each batch holds windows of similar
        # length, shuffled within 50-batch pools, batches in random order) if true, else
        # plain random batches (a GPU's choice: padding costs little there).
        length_batches: bool = setting(
            True, "with pack=false: batch windows of similar length (else plain random batches)"
        )

        def checks(self) -> Checks:
            return {
                "loss": (self.loss in ("bce", "ce", "sampled"), "bce, ce or sampled"),
                "negatives": (self.negatives >= 1, ">= 1"),
            }

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.dp_epsilon > 0 and self.loss == "sampled":
                # its candidates are the batch's targets: one user's loss reads the others'
                raise ValueError("dp_epsilon needs loss=ce or loss=bce (not sampled)")

    # -------------------------------------------------------------- training
    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        self.meta.pop("dp", None)  # a fresh fit spends from nothing (an update continues)
        super()._fit(data, catalog, validator)

    def _train(self, data: Interactions, validator: Validator | None) -> None:
        if self.config.dp_epsilon > 0:
            opt = make_optimizer(self.net, self.config)
            self._train_private(Histories.from_interactions(data), opt, validator, data)
            return
        self.meta.pop("dp", None)  # a private parent's record does not describe this run
        super()._train(data, validator)

    def _length_batches(self) -> bool:
        return self.config.length_batches and not self.config.pack

    def _loss_for(self, data: Interactions) -> BatchLoss:
        """`_batch_loss` with the items' log-frequencies in `data` (the sampled softmax's
        correction)."""
        counts = np.bincount(data.item, minlength=self.n_items).astype(np.float64)
        log_q = torch.from_numpy(np.log(counts / counts.sum() + 1e-12)).float().to(self.device)
        return functools.partial(self._batch_loss, log_q=log_q)

    def _train_private(
        self,
        histories: Histories,
        opt: torch.optim.Optimizer,
        validator: Validator | None,
        data: Interactions,
    ) -> None:
        """DP-SGD (`privacy.PrivateSteps`): every step Poisson-samples users, one window
        (their last max_len + 1 items) each; the spent ε and δ land in meta["dp"]."""
        c, dev = self.config, self.device
        windows = torch.from_numpy(histories.windows(c.max_len + 1))
        windows = windows[(windows > 0).sum(1) >= 2]  # users with one input and one target
        budget = privacy.budget_of(c, len(windows))
        assert budget is not None
        parent = self.meta.get("dp", {}).get("history")  # a warm start spends on top
        steps = privacy.PrivateSteps(
            self.net, opt, budget, len(windows), c.batch_size, c.epochs, parent
        )
        n_params = sum(p.numel() for p in self.net.parameters())
        chunk = privacy.chunk_for(c.max_len, self.n_items, n_params)
        lengths = (windows > 0).sum(1)
        draws = torch.Generator()

        def epoch_fn(epoch: int, run: EpochRun) -> float:
            self.net.train()
            torch.manual_seed(c.seed * 100_003 + epoch)  # dropout and negatives
            draws.manual_seed(c.seed * 100_003 + epoch)  # the Poisson batches
            total, count = 0.0, 0
            for _ in range(steps.steps_per_epoch):
                if run.stop():
                    break
                drawn = steps.draw(draws)
                drawn = drawn[torch.argsort(lengths[drawn], stable=True)]  # chunks of like length
                rows = windows[drawn].to(dev)
                total += steps.step(rows, self._example_loss, chunk, trim_padding) * len(rows)
                count += len(rows)
            return total / max(count, 1)

        try:
            train_by_epochs(self, self.net, epoch_fn, validator, opt=steps.opt)  # lr_decay
        finally:  # what was spent, also when a run is cut short
            self.meta["dp"] = steps.spent()
        self.meta["device"] = str(dev)

    def _example_loss(self, w: torch.Tensor) -> torch.Tensor:
        """One user's loss on one window `w` [1, n + 1], the mean over its real positions:
        the per-example loss DP-SGD differentiates (no boolean indexing, so `vmap` runs it)."""
        c = self.config
        inp, tgt = w[:, :-1], w[:, 1:]
        real = ((inp > 0) & (tgt > 0)).flatten().float()
        q, emb = self.net.head(self.net(inp))
        q, tgt = q.flatten(0, 1), tgt.flatten()
        if c.loss == "ce":
            each = F.cross_entropy(q @ emb[1:].T, (tgt - 1).clamp(min=0), reduction="none")
        else:  # bce: one uniform negative per position, as `_loss`
            neg = torch.randint(1, self.n_items + 1, tgt.shape, device=w.device)
            pos_l, neg_l = (q * emb[tgt]).sum(-1), (q * emb[neg]).sum(-1)
            each = (F.softplus(-pos_l) + F.softplus(neg_l)) / 2
        return (each * real).sum() / real.sum().clamp(min=1.0)

    def _build(self) -> SASRecNet:
        return SASRecNet(self.n_items, SASRecNetConfig.of(self.config))

    def _batch_loss(
        self, module: nn.Module, share: torch.Tensor, log_q: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, int]:
        """The loss at every real position of a batch of windows `share` [B, max_len + 1]:
        packed side by side into rows (`pack`), or with their padding trimmed."""
        if self.config.pack:
            w, seg, pos = pack(share)
            mask = (seg[:, :-1] == seg[:, 1:]) & (seg[:, 1:] >= 0)
            packed = (seg[:, :-1], pos[:, :-1])
        else:
            w, packed = trim_padding(share), None
            mask = (w[:, :-1] > 0) & (w[:, 1:] > 0)
        h = module(w[:, :-1], packed)[mask]
        return self._loss(h.float(), w[:, 1:][mask], log_q), int(mask.sum())

    def _loss(self, h: torch.Tensor, tgt: torch.Tensor, log_q: torch.Tensor | None) -> torch.Tensor:
        """h: hidden states [N, d] at real positions; tgt: their next-item tokens [N]."""
        c, dev = self.config, h.device
        h, emb = self.net.head(h)
        if c.loss == "ce":
            return full_softmax_ce(h, emb[1:], tgt - 1)
        if c.loss == "bce":
            neg = torch.randint(1, self.n_items + 1, tgt.shape).to(dev)
            pos_l = (h * emb[tgt]).sum(-1)
            neg_l = (h * emb[neg]).sum(-1)
            return F.binary_cross_entropy_with_logits(
                torch.cat([pos_l, neg_l]),
                torch.cat([torch.ones_like(pos_l), torch.zeros_like(neg_l)]),
            )
        # sampled softmax: candidates = batch targets ∪ uniform negatives, logQ-corrected by
        # each candidate's expected count in the sample.
        assert log_q is not None, "the sampled softmax needs the items' log-frequencies"
        uniform = torch.randint(0, self.n_items, (c.negatives,)).to(dev)
        cand = torch.unique(torch.cat([tgt - 1, uniform]))
        expected = len(tgt) * log_q[cand].exp() + c.negatives / self.n_items
        logits = h @ emb[cand + 1].T - torch.log(expected).float()
        labels = torch.searchsorted(cand, tgt - 1)
        return F.cross_entropy(logits, labels)

    # -------------------------------------------------------------- inference
    def _score_inputs(self, histories: Histories) -> torch.Tensor:
        return last_windows(histories, self.config.max_len)


class SASRecCE(SASRec):
    """SASRec trained with full softmax cross-entropy: directrec's ID generator."""

    name = "sasrec-ce"
    summary = "SASRec with full-softmax cross-entropy: directrec's ID generator"

    @dataclasses.dataclass
    class Config(SASRec.Config):
        loss: str = setting(
            "ce",
            "bce (one negative per position) | ce (full softmax) | sampled (logQ-corrected sampled softmax)",
        )
