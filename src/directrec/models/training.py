"""What the trained-by-epochs generators share: the epoch loop (validation every few
epochs, early stopping with patience, a wall-clock budget honoured within an epoch, the
best weights kept, a per-epoch log and progress), DDP under torchrun, and checkpoints to
resume from. Their settings (`RunSettings`, `LoopConfig`, `TrainConfig`) are in
`settings.py`."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from directrec.models import distributed
from directrec.models.artifacts import saved_before
from directrec.models.settings import LR_DECAYS, TrainConfig
from directrec.progress import terminal_bar


def batches(windows: torch.Tensor, size: int, by_length: bool) -> list[torch.Tensor]:
    """Row indices of each batch of one epoch, drawn from torch's global generator. With
    `by_length`, rows are shuffled, cut into pools of 50 batches, sorted by length within a
    pool, cut into batches, and the batches shuffled: similar lengths share a batch (so
    `trim_padding` removes most padding) while every epoch still mixes users at random."""
    order = torch.randperm(len(windows))
    if by_length and len(order):
        lengths = (windows > 0).sum(1).cpu()[order]
        pool = 50 * size
        order = torch.cat(
            [
                order[i : i + pool][torch.argsort(lengths[i : i + pool], stable=True)]
                for i in range(0, len(order), pool)
            ]
        )
    cut = list(order.split(size))
    if by_length:
        cut = [cut[i] for i in torch.randperm(len(cut)).tolist()]
    return [b.to(windows.device) for b in cut]


def make_optimizer(net: nn.Module, c: TrainConfig) -> torch.optim.Optimizer:
    """Adam with L2 in the gradient, or AdamW decaying only the ≥ 2-D parameters."""
    params = [p for p in net.parameters() if p.requires_grad]
    if c.optimizer == "adam":
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": c.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=c.lr)


# ----------------------------------------------------------------------------- the loop
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


EpochFn = Callable[[int, Callable[[], bool]], float]


def run_epochs(
    net: nn.Module,
    epoch_fn: EpochFn,
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
    """Run `epoch_fn(epoch, stop) -> mean loss` until `epochs`, patience or the time budget
    ends it. With `validate`, the best validated weights are loaded into `net` at the end.

    With `average` in (0, 1), the weights validated and kept are a moving average of the
    epochs' end weights (average × the previous average + (1 − average) × this epoch's),
    while training continues from the live weights: late epochs that wander around a
    plateau are averaged instead of one of them being picked.

    The budget (`max_minutes`, 0 = none): an epoch function calls `stop()` before each
    batch and ends its epoch early once it says True, which it does when the time spent
    plus the latest validation's (the one a stop then needs) reaches the budget; the loop
    then validates and ends. Between epochs the loop goes on only if the mean epoch's
    training, plus that validation (and this epoch's own when due), still fits. A run thus
    ends within the budget, give or take one batch.

    `agree(x) -> x` makes processes of a distributed run take one process's value (rank
    0's: its validation metric and its time-budget decisions), so all stop together."""
    if not 0.0 <= average < 1.0:
        raise ValueError(f"the weight average's factor must be in [0, 1), not {average}")
    agree = agree or (lambda x: x)
    state = state or LoopState()
    best_weights = state.best_weights or copy.deepcopy(net.state_dict())
    started = time.perf_counter()
    budget = 60.0 * max_minutes
    trained: list[float] = []  # this run's training seconds per epoch
    clock = {"valid": 0.0, "cut": False}  # the latest validation's seconds; budget reached

    def stop() -> bool:
        if budget <= 0 or clock["cut"]:
            return bool(clock["cut"])
        late = time.perf_counter() - started + float(clock["valid"]) >= budget
        clock["cut"] = bool(agree(float(late)))
        return bool(clock["cut"])

    bar = Progress(desc, epochs, state.epoch, progress)
    try:
        for epoch in range(state.epoch, epochs):
            t0 = time.perf_counter()
            loss = epoch_fn(epoch, stop)
            if average > 0:
                _average_into(state, net, average)
            now = time.perf_counter()
            trained.append(now - t0)
            due = validate is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs)
            # Go on only if one more epoch, and the validation that stopping after it
            # needs, still fit in the budget once this epoch's own validation (if due) is done.
            last_valid = float(clock["valid"])
            ahead = sum(trained) / len(trained) + last_valid * (2 if due else 1)
            late = budget > 0 and now - started + ahead > budget
            out_of_time = bool(clock["cut"]) or bool(agree(float(late)))
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": round(loss, 5),
                "seconds": round(now - t0, 2),
            }
            if clock["cut"]:
                row["cut_by_budget"] = True  # the epoch's batches stopped at the budget
            if due or (validate is not None and out_of_time):
                assert validate is not None
                net.eval()
                tv = time.perf_counter()
                if state.averaged is not None:  # validate the average; train on from the live
                    live = copy.deepcopy(net.state_dict())
                    net.load_state_dict(state.averaged)
                metric = float(agree(float(validate())))
                row["valid_ndcg@10"] = round(metric, 5)
                clock["valid"] = time.perf_counter() - tv
                row["valid_seconds"] = round(float(clock["valid"]), 2)
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
            bar.epoch(row, time.perf_counter() - started, budget)
            if after_epoch is not None:
                after_epoch(state)
            if (validate is not None and state.bad >= patience) or out_of_time:
                state.stopped = "time budget" if out_of_time else "patience"
                break
        else:
            state.stopped = state.stopped or "epochs"
    finally:
        bar.close()
    if validate is not None:
        net.load_state_dict(best_weights)
    elif state.averaged is not None:  # nothing validated: the average is the result
        net.load_state_dict(state.averaged)
    net.eval()
    return state


def _average_into(state: LoopState, net: nn.Module, factor: float) -> None:
    """Fold `net`'s weights into the moving average (integer buffers take the latest)."""
    now = net.state_dict()
    if state.averaged is None:
        state.averaged = {k: v.detach().clone() for k, v in now.items()}
        return
    for k, v in now.items():
        if v.is_floating_point():
            state.averaged[k].mul_(factor).add_(v.detach(), alpha=1.0 - factor)
        else:  # counters and indices are not averaged: they take this epoch's
            state.averaged[k].copy_(v)


class Progress:
    """What a run shows while it trains, when `on`: on a terminal a rich bar over the
    epochs (loss, validation metric, elapsed time and ETA); otherwise (a log file, CI) one
    stderr line per epoch. Nothing when off."""

    def __init__(self, desc: str, epochs: int, done: int, on: bool) -> None:
        self.desc, self.epochs, self.done, self.on = desc, epochs, done, on
        self.bar: Any = None
        if on and sys.stderr.isatty():
            self.bar, self.task = terminal_bar(desc, epochs, done)

    def epoch(self, row: dict[str, Any], elapsed: float, budget: float) -> None:
        if not self.on:
            return
        info = f"loss {row['loss']:.4f}"
        if "valid_ndcg@10" in row:
            info += f"  valid NDCG@10 {row['valid_ndcg@10']:.4f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=row["epoch"], info=info)
            return
        ran = row["epoch"] - self.done  # epochs this run trained
        eta = elapsed / max(ran, 1) * (self.epochs - row["epoch"])
        if budget > 0:
            eta = min(eta, max(budget - elapsed, 0.0))
        print(
            f"{self.desc} epoch {row['epoch']}/{self.epochs}  {info}  "
            f"{row['seconds']:.1f}s  ETA ≤ {eta:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def loop_meta(state: LoopState) -> dict[str, Any]:
    """What a model records of its training run in its artefact's meta."""
    return {
        "train_log": state.log,
        "best_epoch": state.best_epoch,
        "stopped_by": state.stopped,
        "best_valid_ndcg@10": state.best if state.best > -math.inf else None,
    }


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


# ----------------------------------------------------------------------------- one run
@dataclasses.dataclass(frozen=True)
class EpochRun:
    """What an epoch function needs beside its data: `module` to call for the loss (the
    net, DDP-wrapped under torchrun), this process's place `d` (each rank takes its share
    of a global batch), and `stop()`, to call before each batch: True once the time budget
    says the batches must stop (every rank gets rank 0's answer)."""

    module: nn.Module
    d: distributed.Dist
    stop: Callable[[], bool]

    @staticmethod
    def alone(net: nn.Module) -> EpochRun:
        """One process, no budget: for calling an epoch function directly."""
        return EpochRun(net, distributed.Dist(), lambda: False)


def rank_shares(
    items: Sequence[Any] | np.ndarray, size: int, run: EpochRun
) -> Iterator[tuple[int, Any]]:
    """One epoch's batches of `items` (in their order, `size` each) as (the whole batch's
    length, this rank's share of it: every `world`-th item from its rank), until `run.stop()`
    says the budget is spent. A batch too small to give every rank a share is skipped by
    all ranks alike."""
    d = run.d
    for b in range(0, len(items), size):
        if run.stop():
            return
        batch = items[b : b + size]
        if len(batch) >= d.world:
            yield len(batch), batch[d.rank :: d.world]


def rank_zero(validator: Callable[[Any], float] | None) -> Callable[[Any], float] | None:
    """The validator on rank 0; a stand-in elsewhere (the other ranks take rank 0's
    decisions through `agree`, so their value is never used)."""
    if validator is None or distributed.current().main:
        return validator
    return lambda model: 0.0


def train_by_epochs(
    model: Any,
    net: nn.Module,
    epoch_fn: Callable[[int, EpochRun], float],
    validator: Callable[[Any], float] | None,
    opt: torch.optim.Optimizer | None = None,
    data: Any | None = None,
) -> LoopState:
    """Train `net` by `epoch_fn(epoch, EpochRun) -> mean loss` with the schedule of
    `model.config` (epochs, eval_every, patience, max_minutes, and `average` where the
    config has it; with `opt`, also the learning rate `lr` under `lr_decay` and
    `cooldown`, from a param group's own `peak_lr` where it has one) and the run settings
    of `model.run` (progress, checkpoint_dir).

    Under torchrun every rank trains a DDP-wrapped `net`, rank 0 validates and checkpoints,
    and all ranks follow its decisions, so they stop together with the same weights. With
    `checkpoint_dir` (needs `opt` and `data`, whose fingerprint a checkpoint must match)
    progress is saved after every epoch and a run resumes where one stopped. The run's log
    lands in `model.meta`."""
    c, run = model.config, model.run
    d = distributed.current()
    if getattr(c, "dp_epsilon", 0.0) > 0 and (d.active or run.checkpoint_dir):
        # the accountant's spending would have to be shared or checkpointed with the weights
        raise ValueError(f"{model.name}: dp_epsilon trains in one process without checkpoint_dir")
    module = net
    if d.active:
        dev = next(net.parameters()).device
        ids = [dev.index] if dev.type == "cuda" else None
        module = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    check = rank_zero(validator)
    state, after = None, None
    if run.checkpoint_dir:
        if opt is None or data is None:
            raise ValueError(f"{model.name}: checkpoint_dir is not supported by this model")
        setting = checkpoint_config(dataclasses.asdict(c))
        defaults = checkpoint_config({**dataclasses.asdict(type(c)()), **saved_before(type(c))})
        ckpt, fingerprint = Path(run.checkpoint_dir), data.fingerprint()
        state = load_checkpoint(ckpt, net, opt, setting, fingerprint, defaults)
        if d.main:
            after = lambda st: save_checkpoint(ckpt, net, opt, st, setting, fingerprint)  # noqa: E731
    decay, cooldown = getattr(c, "lr_decay", "none"), getattr(c, "cooldown", 0.2)

    def one(epoch: int, stop: Callable[[], bool]) -> float:
        if opt is not None:
            for group in opt.param_groups:  # a group may carry a peak rate of its own
                peak = group.get("peak_lr", c.lr)
                group["lr"] = epoch_lr(peak, epoch, c.epochs, decay, cooldown)
        return epoch_fn(epoch, EpochRun(module, d, stop))

    state = run_epochs(
        net,
        one,
        epochs=c.epochs,
        validate=None if check is None else (lambda: check(model)),
        eval_every=c.eval_every,
        patience=c.patience,
        max_minutes=c.max_minutes,
        state=state,
        after_epoch=after,
        desc=model.name,
        progress=run.progress and d.main,  # one bar per run, not per process
        agree=d.agree,
        average=getattr(c, "average", 0.0),
    )
    model.meta.update(loop_meta(state))
    if d.active:
        model.meta["processes"] = d.world
    return state


# ----------------------------------------------------------------------------- checkpoints
# Settings a resumed run may change: the schedule (resuming with more epochs continues).
SCHEDULE = ("epochs", "patience", "eval_every", "max_minutes")


def checkpoint_config(config: dict[str, Any]) -> dict[str, Any]:
    """The settings (a config as a dict) a checkpoint must match to be resumed."""
    return {k: v for k, v in config.items() if k not in SCHEDULE}


def save_checkpoint(
    path: str | Path,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    state: LoopState,
    config: dict[str, Any],
    fingerprint: str,
) -> None:
    """Write a run's progress to `path` atomically (safetensors + JSON): the weights, the
    best and averaged weights, the optimizer's state, the loop's state, the config and
    data fingerprint it must be resumed with."""
    d = Path(path)
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {f"net.{k}": v.cpu().numpy() for k, v in net.state_dict().items()}
    tensors |= {f"best.{k}": v.cpu().numpy() for k, v in (state.best_weights or {}).items()}
    tensors |= {f"avg.{k}": v.cpu().numpy() for k, v in (state.averaged or {}).items()}
    opt_state = opt.state_dict()
    for idx, st in opt_state["state"].items():
        for name, v in st.items():
            t = torch.as_tensor(v).cpu()
            tensors[f"opt.{idx}.{name}"] = t.numpy().reshape(-1) if t.dim() == 0 else t.numpy()
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / "state.safetensors")
    )
    info = {
        "config": config,
        "data": fingerprint,
        "epoch": state.epoch,
        "best": state.best,
        "best_epoch": state.best_epoch,
        "bad": state.bad,
        "log": state.log,
        "param_groups": opt_state["param_groups"],
    }
    (tmp / "progress.json").write_text(json.dumps(info))
    old = d.with_name(d.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if d.exists():
        os.replace(d, old)
    os.replace(tmp, d)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    path: str | Path,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    config: dict[str, Any],
    fingerprint: str,
    defaults: dict[str, Any] | None = None,
) -> LoopState | None:
    """Load the progress at `path` into `net` and `opt` and return the loop's state to
    resume (None: no checkpoint there). A checkpoint made with another config or data is
    refused; a setting it lacks (added later) ran at its default (`defaults`), and one
    it has that `config` lacks (removed since, or a run setting) is ignored."""
    d = Path(path)
    if not (d / "progress.json").exists():
        return None
    info = json.loads((d / "progress.json").read_text())
    made_with = {**(defaults or {}), **info["config"]}
    made_with = {k: v for k, v in made_with.items() if k in config}
    if made_with != config or info["data"] != fingerprint:
        raise ValueError(
            f"{d}: checkpoint was made with another config or data; "
            "remove it or choose another --set checkpoint_dir"
        )
    dev = next(net.parameters()).device
    tensors = load_file(str(d / "state.safetensors"))
    net.load_state_dict(
        {k[4:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("net.")}
    )
    opt_state: dict = {"state": {}, "param_groups": info["param_groups"]}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            t = torch.from_numpy(v)
            opt_state["state"].setdefault(int(idx), {})[name] = (
                t.reshape(()) if name == "step" else t
            )
    opt.load_state_dict(opt_state)
    best = {k[5:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("best.")}
    avg = {k[4:]: torch.from_numpy(v).to(dev) for k, v in tensors.items() if k.startswith("avg.")}
    return LoopState(
        best=info["best"],
        best_epoch=info["best_epoch"],
        epoch=info["epoch"],
        bad=info["bad"],
        log=info["log"],
        best_weights=best,
        averaged=avg or None,
    )
