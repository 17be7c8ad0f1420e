"""The semantic-ID model's training: the epoch loops of both architectures (under
`models/training.py`'s `train_by_epochs`, which owns early stopping, budgets, checkpoints and
torchrun), and the hybrid's ID weight chosen on validation afterwards."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from directrec.data.dataset import Interactions
from directrec.data.histories import Histories
from directrec.models import distributed
from directrec.models.base import Validator
from directrec.models.training import EpochRun, batches, make_optimizer, rank_zero, train_by_epochs

# The ID-head weights tried on validation after a hybrid is trained (0: the codes alone);
# the grid reaches well past 1, where the ID head outweighs the codes.
ID_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class Training:
    """Mixed into `SemanticID`: trains its network on the item codes."""

    config: Any
    meta: dict[str, Any]
    net: Any
    codes: torch.Tensor
    popularity: np.ndarray
    n_items: int
    device: torch.device

    def _train(self, data: Interactions, validator: Validator | None) -> None:
        """The epoch loop over `data` from the current weights (`train_by_epochs`: under
        torchrun every rank takes a share of each global batch, rank 0 validates; with
        `checkpoint_dir` a run resumes where one stopped, the codes being refit alike)."""
        c = self.config
        opt = make_optimizer(self.net, c)
        seqs = (data.indptr, data.item)
        histories = Histories.from_interactions(data)
        windows = torch.from_numpy(histories.training_windows(c.max_len + 1, c.windows)) - 1
        windows = windows[(windows >= 0).sum(1) >= 2]
        epoch_fn = (
            (lambda e, run: self._epoch_causal(windows, opt, e, run))
            if c.arch == "causal"
            else (lambda e, run: self._epoch(seqs, opt, e, run))
        )
        if c.id_loss > 0:  # validation during training sees the hybrid at `id_weight`
            # items without training interactions (cold) are no negatives of the ID head:
            # their item row stays zero and they keep what their codes say
            allowed = torch.from_numpy(self.popularity[: self.n_items] > 0)
            self.net.allow_ids(None if bool(allowed.all()) else allowed.to(self.device))
        train_by_epochs(self, self.net, epoch_fn, validator, opt=opt, data=data)
        valid = rank_zero(validator)
        if c.id_loss > 0 and valid is not None:
            self._choose_id_weight(valid, distributed.current())

    def _choose_id_weight(self, check: Validator, d: distributed.Dist) -> None:
        """The ID head's weight in the beam's score (`id_weight`), chosen from ID_WEIGHTS on
        the validator after training (0 = the code beam alone; ties: the smaller); rank 0
        decides under torchrun. The beam is searched once per validation batch and
        re-blended for each weight."""
        table = {}
        with self.reusing_candidates():
            for w in ID_WEIGHTS:
                self.config = dataclasses.replace(self.config, id_weight=w)
                table[w] = float(check(self))
        best = max(ID_WEIGHTS, key=lambda w: (table[w], -w))
        best = float(d.agree(best)) if d.active else best
        self.config = dataclasses.replace(self.config, id_weight=best)
        self.meta["id_weight_valid"] = {str(w): round(v, 5) for w, v in table.items()}

    def _epoch(
        self,
        seqs: tuple[np.ndarray, np.ndarray],
        opt: torch.optim.Optimizer,
        epoch: int,
        run: EpochRun,
    ) -> float:
        """Each user contributes `samples_per_user` (history, next item) pairs cut at random
        positions; deterministic given (seed, epoch). With several ranks each global batch
        is split over them, the loss scaled so the averaged gradient is the batch mean; the
        batches stop when `run.stop()` says the time budget is spent."""
        c, d = self.config, run.d
        indptr, items = seqs
        dev = self.device
        rng = np.random.default_rng([c.seed, epoch])
        lengths = np.diff(indptr)
        users = np.repeat(np.flatnonzero(lengths >= 2), c.samples_per_user)
        rng.shuffle(users)
        torch.manual_seed(c.seed * 100_003 + epoch)
        self.net.train()
        total, count = 0.0, 0
        for b in range(0, len(users), c.batch_size):
            if run.stop():
                break
            u = users[b : b + c.batch_size]
            cut = rng.integers(1, lengths[u])  # target position within the user's sequence
            if len(u) < d.world:
                continue  # too small to give every rank a share (all ranks skip it)
            u, cut = u[d.rank :: d.world], cut[d.rank :: d.world]
            target = items[indptr[u] + cut]
            hist, pad = self._windows(indptr[u], indptr[u] + cut, items)
            t = torch.from_numpy(target).to(dev)
            loss = run.module(self._inputs(hist), pad.to(dev), self.codes[t], t)
            share = len(u) * d.world / d.total(len(u))
            opt.zero_grad(set_to_none=True)
            (loss * share).backward()
            opt.step()
            total += float(loss.detach()) * len(u)
            count += len(u)
        return d.total(total) / max(d.total(count), 1)

    def _epoch_causal(
        self,
        windows: torch.Tensor,
        opt: torch.optim.Optimizer,
        epoch: int,
        run: EpochRun,
    ) -> float:
        """One pass over the training windows (`windows`, -1 = padding); every position's
        state is the context for the next item, so one forward pass trains on the whole
        window (split over ranks and stopped by the budget like `_epoch`); all-padding
        columns are trimmed from each batch (`length_batches` makes them many)."""
        c, d = self.config, run.d
        torch.manual_seed(c.seed * 100_003 + epoch)
        self.net.train()
        total, count = 0.0, 0
        for batch in batches(windows >= 0, c.batch_size, by_length=c.length_batches):
            if run.stop():
                break
            if len(batch) < d.world:
                continue
            w = windows[batch[d.rank :: d.world]]
            w = w[:, (w >= 0).any(0).nonzero().min() :].to(self.device)  # trim all-padding columns
            inp, tgt = w[:, :-1], w[:, 1:]
            targets = torch.where((tgt >= 0)[..., None], self.codes[tgt.clamp(min=0)], -1)
            loss = run.module(self._inputs(inp.clamp(min=0)), inp < 0, targets, tgt)
            n = int(((inp >= 0) & (tgt >= 0)).sum())
            share = n * d.world / max(d.total(n), 1)
            opt.zero_grad(set_to_none=True)
            (loss * share).backward()
            opt.step()
            total += float(loss.detach()) * n
            count += n
        return d.total(total) / max(d.total(count), 1)

    def _inputs(self, hist: torch.Tensor) -> torch.Tensor:
        """The encoder's input per history position: the item's codes, plus its index when
        the model has the ID + semantic item embedding (padding -1 is masked later)."""
        hist = hist.to(self.codes.device)
        codes = self.codes[hist]
        if self.net.item_emb is None:
            return codes
        return torch.cat([codes, hist.clamp(min=0).unsqueeze(-1)], -1)

    def _windows(
        self, start: np.ndarray, end: np.ndarray, items: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Item windows items[max(start, end - max_len):end], left-padded (-1 = padding)."""
        width = int(min(self.config.max_len, max(int((end - start).max()), 1)))
        pos = end[:, None] - width + np.arange(width)[None, :]
        valid = pos >= start[:, None]
        hist = np.where(valid, items[np.clip(pos, 0, len(items) - 1)], -1)
        return torch.from_numpy(hist), torch.from_numpy(~valid)
