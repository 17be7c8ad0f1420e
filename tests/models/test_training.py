"""The shared epoch loop: the moving average of the weights, by hand; the time budget on
a fake clock."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from directrec.models.training import run_epochs


def _run(validate: bool) -> tuple[nn.Linear, list[float], list[float]]:
    net = nn.Linear(1, 1, bias=False)
    live = [1.0, 3.0, 7.0]  # each epoch's end weight
    started_from: list[float] = []
    validated: list[float] = []

    def epoch_fn(epoch: int) -> float:
        started_from.append(net.weight.item())
        with torch.no_grad():
            net.weight.fill_(live[epoch])
        return 0.0

    def check() -> float:
        validated.append(net.weight.item())
        return -abs(net.weight.item() - 2.0)  # the best is the weight closest to 2

    run_epochs(
        net,
        epoch_fn,
        epochs=3,
        validate=check if validate else None,
        eval_every=1,
        patience=10,
        average=0.5,
    )
    return net, started_from, validated[:]


def test_the_weight_average_is_validated_kept_and_never_trained_from():
    net, started_from, validated = _run(validate=True)
    # averages: 1; 0.5·1 + 0.5·3 = 2; 0.5·2 + 0.5·7 = 4.5
    assert validated == [1.0, 2.0, 4.5]
    assert started_from[1:] == [1.0, 3.0]  # training goes on from the live weights
    assert net.weight.item() == 2.0  # the best validated average is kept
    net, _, _ = _run(validate=False)
    assert net.weight.item() == 4.5  # without validation the last average is the result


def test_the_weight_average_factor_is_checked():
    with pytest.raises(ValueError, match="weight average"):
        run_epochs(
            nn.Linear(1, 1),
            lambda e: 0.0,
            epochs=1,
            validate=None,
            eval_every=1,
            patience=1,
            average=1.0,
        )


def test_the_weight_average_takes_integer_buffers_as_they_are():
    """A buffer that is not floating point (a counter) is not averaged: the kept weights
    carry its latest value."""
    net = nn.Linear(1, 1, bias=False)
    net.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def epoch_fn(epoch: int) -> float:
        net.seen += 1
        return 0.0

    run_epochs(net, epoch_fn, epochs=3, validate=None, eval_every=1, patience=1, average=0.5)
    assert net.seen.item() == 3


def test_a_time_budget_ends_the_run_within_it_validation_included(monkeypatch):
    """10 s an epoch, 30 s a validation (every 2nd epoch), a 2-minute budget: four epochs and
    two validations end at 100 s; a fifth epoch and the validation stopping after it needs
    would end at 140 s, so the loop stops after four, validated."""
    from directrec.models import training

    clock = [0.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    net = nn.Linear(1, 1)

    def epoch_fn(epoch: int) -> float:
        clock[0] += 10.0
        return 0.0

    def check() -> float:
        clock[0] += 30.0
        return 0.0

    state = run_epochs(
        net, epoch_fn, epochs=100, validate=check, eval_every=2, patience=99, max_minutes=2.0
    )
    assert state.stopped == "time budget" and len(state.log) == 4
    assert "valid_ndcg@10" in state.log[-1] and clock[0] == 100.0
