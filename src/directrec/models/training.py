"""The epoch loop the trained-by-epochs generators share: validation every few epochs,
early stopping with patience, a wall-clock budget, the best weights kept, a per-epoch log."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm


@dataclasses.dataclass
class LoopState:
    """Progress of a training run (what a checkpoint stores to resume it)."""

    best: float = -math.inf
    best_epoch: int = 0
    epoch: int = 0  # epochs completed
    bad: int = 0  # validations since the last improvement
    log: list = dataclasses.field(default_factory=list)
    best_weights: dict | None = None
    averaged: dict | None = None  # the moving average of the weights (with `average` > 0)
    stopped: str = ""  # what ended the run: epochs | patience | time budget


def run_epochs(
    net: nn.Module,
    epoch_fn: Callable[[int], float],
    *,
    epochs: int,
    validate: Callable[[], float] | None,
    eval_every: int,
    patience: int,
    max_minutes: float = 0.0,
    state: LoopState | None = None,
    after_epoch: Callable[[LoopState], None] | None = None,
    desc: str = "train",
    progress: bool = False,
    agree: Callable[[float], float] | None = None,
    average: float = 0.0,
) -> LoopState:
    """Run `epoch_fn(epoch) -> mean loss` until `epochs`, patience or the time budget ends
    it. With `validate`, the best validated weights are loaded into `net` at the end.

    With `average` in (0, 1), the weights validated and kept are a moving average of the
    epochs' end weights (average × the previous average + (1 − average) × this epoch's),
    while training continues from the live weights: late epochs that wander around a
    plateau are averaged instead of one of them being picked.

    The budget (`max_minutes`) is checked after each epoch: the loop goes on only if the
    mean epoch's training, plus the validation a stop would then need (and this epoch's
    own when it is due), still fits, so a budgeted run ends within it.

    `agree(x) -> x` makes processes of a distributed run take one process's value (rank
    0's: its validation metric and its time-budget decision), so all stop together."""
    if not 0.0 <= average < 1.0:
        raise ValueError(f"the weight average's factor must be in [0, 1), not {average}")
    agree = agree or (lambda x: x)
    state = state or LoopState()
    best_weights = state.best_weights or copy.deepcopy(net.state_dict())
    started = time.perf_counter()
    trained: list[float] = []  # this run's training seconds per epoch
    last_valid = 0.0  # the latest validation's seconds (none yet: 0)
    bar = tqdm(range(state.epoch, epochs), desc=desc, disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        loss = epoch_fn(epoch)
        if average > 0:
            now = net.state_dict()
            if state.averaged is None:
                state.averaged = {k: v.detach().clone() for k, v in now.items()}
            else:
                for k, v in now.items():
                    if v.is_floating_point():
                        state.averaged[k].mul_(average).add_(v.detach(), alpha=1.0 - average)
                    else:  # counters and indices are not averaged: they take this epoch's
                        state.averaged[k].copy_(v)
        now = time.perf_counter()
        trained.append(now - t0)
        due = validate is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs)
        # Go on only if one more epoch, and the validation that stopping after it needs,
        # still fit in the budget once this epoch's own validation (if due) is done.
        ahead = sum(trained) / len(trained) + last_valid * (2 if due else 1)
        out_of_time = bool(
            agree(float(max_minutes > 0 and now - started + ahead > 60 * max_minutes))
        )
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": round(loss, 5),
            "seconds": round(now - t0, 2),
        }
        if due or (validate is not None and out_of_time):
            net.eval()
            tv = time.perf_counter()
            if state.averaged is not None:  # validate the average; train on from the live
                live = copy.deepcopy(net.state_dict())
                net.load_state_dict(state.averaged)
            metric = float(agree(float(validate())))
            row["valid_ndcg@10"] = round(metric, 5)
            last_valid = time.perf_counter() - tv
            row["valid_seconds"] = round(last_valid, 2)
            if metric > state.best:
                state.best, state.best_epoch, state.bad = metric, epoch + 1, 0
                best_weights = copy.deepcopy(net.state_dict())
            else:
                state.bad += 1
            if state.averaged is not None:
                net.load_state_dict(live)
        state.log.append(row)
        state.epoch = epoch + 1
        state.best_weights = best_weights
        bar.set_postfix({k: v for k, v in row.items() if k != "epoch"})
        if after_epoch is not None:
            after_epoch(state)
        if (validate is not None and state.bad >= patience) or out_of_time:
            state.stopped = "time budget" if out_of_time else "patience"
            break
    else:
        state.stopped = state.stopped or "epochs"
    if validate is not None:
        net.load_state_dict(best_weights)
    elif state.averaged is not None:  # nothing validated: the average is the result
        net.load_state_dict(state.averaged)
    net.eval()
    return state


def loop_meta(state: LoopState) -> dict[str, Any]:
    """What a model records of its training run in its artefact's meta."""
    return {
        "train_log": state.log,
        "best_epoch": state.best_epoch,
        "stopped_by": state.stopped,
        "best_valid_ndcg@10": state.best if state.best > -math.inf else None,
    }


LR_DECAYS = ("none", "cosine", "cooldown")


def epoch_lr(base: float, epoch: int, epochs: int, decay: str, cooldown: float = 0.2) -> float:
    """The learning rate of 0-based `epoch`: `base` throughout (`none`); a half cosine from
    `base` at the first epoch towards 0 after the last (`cosine`, horizon `epochs`); or
    `base` until the last `cooldown` share of `epochs`, which step linearly towards 0
    (`cooldown`: n epochs train at n/(n+1), …, 1/(n+1) of `base`). A function of the epoch
    alone, so a resumed or distributed run follows the same curve."""
    if decay not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, not {decay!r}")
    if not 0.0 < cooldown <= 1.0:
        raise ValueError(f"cooldown must be a share of the epochs in (0, 1], not {cooldown}")
    if decay == "none" or epochs <= 0:
        return base
    if decay == "cooldown":
        n = max(1, round(cooldown * epochs))
        return base * min(1.0, max(epochs - epoch, 1) / (n + 1))
    return base * 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))


def train_by_epochs(
    model: Any,
    net: nn.Module,
    epoch_fn: Callable[[int], float],
    validator: Callable[[Any], float] | None,
    state: LoopState | None = None,
    after_epoch: Callable[[LoopState], None] | None = None,
    agree: Callable[[float], float] | None = None,
    opt: torch.optim.Optimizer | None = None,
) -> LoopState:
    """`run_epochs` with the schedule from `model.config` (epochs, eval_every, patience,
    max_minutes, progress, and `average` where the config has it; with `opt`, also the
    learning rate `lr` under `lr_decay` and `cooldown`); the run's log lands in `model.meta`."""
    c = model.config
    decay, cooldown = getattr(c, "lr_decay", "none"), getattr(c, "cooldown", 0.2)
    if opt is not None:
        epoch_lr(c.lr, 0, c.epochs, decay, cooldown)  # a bad setting fails before training

        def scheduled(epoch: int) -> float:
            for group in opt.param_groups:
                group["lr"] = epoch_lr(c.lr, epoch, c.epochs, decay, cooldown)
            return epoch_fn(epoch)

    state = run_epochs(
        net,
        epoch_fn if opt is None else scheduled,
        epochs=c.epochs,
        validate=None if validator is None else (lambda: validator(model)),
        eval_every=c.eval_every,
        patience=c.patience,
        max_minutes=c.max_minutes,
        state=state,
        after_epoch=after_epoch,
        desc=model.name,
        progress=c.progress,
        agree=agree,
        average=getattr(c, "average", 0.0),
    )
    model.meta.update(loop_meta(state))
    return state
