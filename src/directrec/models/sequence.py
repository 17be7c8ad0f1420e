"""What the item-sequence models trained on history windows share (SASRec, GRU4Rec,
BERT4Rec): the typed settings of a network over item IDs, training by epochs on each
user's windows (`training.train_by_epochs`: early stopping, budget, checkpoints, DDP), warm
starts that make room for new items, scoring by one forward pass, and the weights as
safetensors.

A subclass builds its network (`_build`: a module with an `item` embedding, token 0 =
padding, item i = token i + 1, and `logits(h)` over all items), says what one batch's loss
is (`_batch_loss`) and what a scored history looks like (`_score_inputs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.base import Capabilities, NetworkModel, Validator
from directrec.models.settings import TrainConfig
from directrec.models.training import EpochRun, batches, make_optimizer, train_by_epochs
from directrec.models.transformer import autocast, trim_padding

# (network to call, a batch of windows) → (mean loss, how many targets it averages)
BatchLoss = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, int]]


@dataclasses.dataclass
class SequenceConfig(TrainConfig):
    """The training settings every item-sequence model shares (`TrainConfig`); its Config
    combines them with its network's own config, which holds `max_len`, the context read."""

    private: ClassVar[bool] = False  # whether the model trains with DP-SGD (`dp_epsilon`)

    def __post_init__(self) -> None:
        if self.dp_epsilon != 0 and not self.private:
            raise ValueError(
                "dp_epsilon is not supported by gru4rec or bert4rec yet; train sasrec-ce "
                "(or sasrec) with it"
            )
        super().__post_init__()


class SequenceModel(NetworkModel):
    """Base of the models that read a user's last `max_len` items through a network."""

    capabilities = Capabilities(early_stopping=True, warm_start=True)
    # Tokens a training window holds beyond `max_len` (1: the next item after the context).
    window_extra: ClassVar[int] = 0
    # Whether the network runs under bfloat16 autocast when the run asks for it.
    bf16_ok: ClassVar[bool] = True
    net: nn.Module

    Config = SequenceConfig

    # -------------------------------------------------------------- the subclass's part
    def _build(self) -> nn.Module:
        raise NotImplementedError

    def _batch_loss(self, module: nn.Module, w: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(mean loss, how many targets it averages) of one batch of left-padded windows
        `w` [B, n] (every row at least two real tokens; columns of padding not yet trimmed),
        `module` being the network to call (DDP-wrapped under torchrun)."""
        raise NotImplementedError

    def _score_inputs(self, histories: Histories) -> torch.Tensor:
        """The left-padded tokens whose last position's hidden state scores the items."""
        raise NotImplementedError

    # -------------------------------------------------------------- training
    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        self.net = self._build().to(self.device)
        self._train(data, validator)

    def _grow(self, data: Interactions, catalog: Catalog | None) -> None:
        """New items get fresh rows (of the embedding, of any per-item tensor); everything
        else keeps its weights."""
        if data.n_items == self.n_items:
            return
        old = self.net.state_dict()
        self.n_items = data.n_items
        self.net = self._build().to(self.device)
        with torch.no_grad():
            for name, p in self.net.state_dict().items():
                src = old[name].to(p.device)
                p[: len(src)].copy_(src)  # per-item tensors grow along their first axis

    def _length_batches(self) -> bool:
        """Whether an epoch's batches group windows of similar length (`training.batches`)."""
        return True

    def _loss_for(self, data: Interactions) -> BatchLoss:
        """The batch loss training on `data` minimises (`_batch_loss` unless a subclass
        binds statistics of the training data to it)."""
        return self._batch_loss

    def _train(self, data: Interactions, validator: Validator | None) -> None:
        c, dev = self.config, self.device
        opt = make_optimizer(self.net, c)
        histories = Histories.from_interactions(data)
        length = c.max_len + self.window_extra
        windows = torch.from_numpy(histories.training_windows(length, c.windows))
        windows = windows[(windows > 0).sum(1) >= 2].to(dev)  # a context and a target
        loss = self._loss_for(data)
        epoch_fn = lambda epoch, run: self._epoch(windows, opt, epoch, run, loss)  # noqa: E731
        train_by_epochs(self, self.net, epoch_fn, validator, opt=opt, data=data)
        self.meta["device"] = str(dev)

    def _optimizer(self) -> torch.optim.Optimizer:
        """This model's optimizer over its network (`training.make_optimizer`)."""
        return make_optimizer(self.net, self.config)

    def _epoch(
        self,
        windows: torch.Tensor,
        opt: torch.optim.Optimizer,
        epoch: int,
        run: EpochRun,
        batch_loss: BatchLoss,
    ) -> float:
        """One pass over the training windows (in batches of similar length, little padding
        to trim, unless `_length_batches` says otherwise); deterministic given (seed,
        epoch), so a resumed run continues exactly. With several ranks each global batch is
        split over them and every rank's loss is scaled so the averaged gradient is the
        global batch's mean. The batches stop when `run.stop()` says the time budget is
        spent."""
        c, dev, d = self.config, windows.device, run.d
        self.net.train()
        torch.manual_seed(c.seed * 100_003 + epoch)
        total = torch.zeros((), device=dev)
        count = 0
        for batch in batches(windows, c.batch_size, self._length_batches()):
            if run.stop():
                break
            if len(batch) < d.world:
                continue  # too small to give every rank a share (all ranks skip it)
            with autocast(dev, self.run.bf16 and self.bf16_ok):
                loss, n = batch_loss(run.module, windows[batch[d.rank :: d.world]])
            n_global = d.total(n)
            opt.zero_grad(set_to_none=True)
            (loss * (n * d.world / max(n_global, 1))).backward()
            opt.step()
            total += loss.detach().float() * n
            count += n
        return d.total(float(total)) / max(d.total(count), 1)

    # -------------------------------------------------------------- inference
    @torch.no_grad()
    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        """One forward pass; the last position's scores over all items (logits)."""
        dev = self.device
        seq = self._score_inputs(histories).to(dev)
        with autocast(dev, self.run.bf16 and self.bf16_ok and dev.type == "cuda"):
            return self.net.logits(self.net(seq)[:, -1]).float()


def last_windows(histories: Histories, length: int) -> torch.Tensor:
    """Each history's last `length` items as left-padded tokens, all-padding columns cut."""
    return trim_padding(torch.from_numpy(histories.windows(length)))
