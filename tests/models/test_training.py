"""The shared epoch loop: the moving average of the weights, by hand; the time budget on
a fake clock (between epochs and within one); progress; the shared settings' checks; the
classic networks (Mult-VAE, CFGAN) on the loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from directrec.data.split import leave_one_out
from directrec.models import create
from directrec.models.training import batches, run_epochs


def _run(validate: bool) -> tuple[nn.Linear, list[float], list[float]]:
    net = nn.Linear(1, 1, bias=False)
    live = [1.0, 3.0, 7.0]  # each epoch's end weight
    started_from: list[float] = []
    validated: list[float] = []

    def epoch_fn(epoch: int, stop) -> float:
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
            lambda e, stop: 0.0,
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

    def epoch_fn(epoch: int, stop) -> float:
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

    def epoch_fn(epoch: int, stop) -> float:
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


def test_a_time_budget_stops_the_batches_within_an_epoch_then_validates(monkeypatch):
    """1 s a batch, 3 s a validation (every epoch), a 1-minute budget. Epoch 1 (10 batches)
    and its validation end at 13 s; epoch 2 has 100 batches, far more than the budget
    holds: its batches stop once the time spent plus a validation reaches 60 s (57 s), the
    run validates and ends at 60 s, within budget + one batch + one validation."""
    from directrec.models import training

    clock = [0.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    ran: list[int] = []

    def epoch_fn(epoch: int, stop) -> float:
        n = 0
        for _ in range(10 if epoch == 0 else 100):
            if stop():
                break
            clock[0] += 1.0
            n += 1
        ran.append(n)
        return 1.0

    def check() -> float:
        clock[0] += 3.0
        return float(len(ran))

    state = run_epochs(
        nn.Linear(1, 1),
        epoch_fn,
        epochs=5,
        validate=check,
        eval_every=1,
        patience=9,
        max_minutes=1.0,
    )
    assert ran == [10, 44] and clock[0] == 60.0
    assert state.stopped == "time budget" and len(state.log) == 2
    assert state.log[-1]["cut_by_budget"] and "valid_ndcg@10" in state.log[-1]
    assert state.best_epoch == 2  # the cut epoch's validation counts


def test_without_a_budget_the_batches_never_stop(monkeypatch):
    """max_minutes=0: `stop()` is always False, however long the clock runs."""
    from directrec.models import training

    clock = [0.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])
    asked: list[bool] = []

    def epoch_fn(epoch: int, stop) -> float:
        for _ in range(5):
            asked.append(stop())
            clock[0] += 1e6
        return 0.0

    state = run_epochs(nn.Linear(1, 1), epoch_fn, epochs=3, validate=None, eval_every=1, patience=1)
    assert asked == [False] * 15 and state.stopped == "epochs"


def test_progress_off_a_terminal_is_one_stderr_line_per_epoch(capsys):
    def check() -> float:
        return 0.25

    run_epochs(
        nn.Linear(1, 1),
        lambda e, stop: 0.5,
        epochs=3,
        validate=check,
        eval_every=2,
        patience=9,
        desc="m",
        progress=True,
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(x.startswith("m epoch ") and "ETA" in x for x in lines)
    assert "loss 0.5000" in lines[0] and "valid NDCG@10 0.2500" in lines[1]
    assert "valid" not in lines[0]
    run_epochs(
        nn.Linear(1, 1), lambda e, stop: 0.5, epochs=2, validate=None, eval_every=1, patience=1
    )
    assert capsys.readouterr().err == ""  # progress off: nothing


def test_progress_on_a_terminal_is_a_rich_bar(monkeypatch):
    """On a TTY the run draws a rich progress bar (epochs done, loss, validation metric)."""
    import io
    import sys

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    run_epochs(
        nn.Linear(1, 1),
        lambda e, stop: 0.5,
        epochs=2,
        validate=lambda: 0.25,
        eval_every=1,
        patience=9,
        desc="bar-test",
        progress=True,
    )
    out = tty.getvalue()
    assert "bar-test" in out and "2/2" in out and "valid NDCG@10 0.2500" in out
    assert " epoch 1/2" not in out  # not the line-per-epoch form


@pytest.mark.parametrize(
    ("bad", "name"),
    [
        ({"lr_decay": "step"}, "lr_decay"),
        ({"cooldown": 0.0}, "cooldown"),
        ({"windows": "some"}, "windows"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"average": 1.0}, "average"),
        ({"max_minutes": -1.0}, "max_minutes"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_training_settings_are_checked_when_built(bad, name):
    from directrec.models.settings import TrainConfig

    with pytest.raises(ValueError, match=f"^{name} must be"):
        TrainConfig(**bad)


def test_run_settings_split_from_the_config_and_every_model_takes_them():
    """`create` splits run settings (device, threads, bf16, progress, checkpoint_dir) from
    the config; `setting_fields` names both, for `--set` and recipes."""
    import dataclasses

    from directrec.models import MODELS, create
    from directrec.models.settings import RUN_FIELDS, RunSettings

    model = create("sasrec-ce", {"device": "cpu", "lr": 2e-3, "bf16": True})
    assert model.run == RunSettings(device="cpu", bf16=True) and model.config.lr == 2e-3
    for name, cls in MODELS.items():
        config = {f.name for f in dataclasses.fields(cls.Config)}
        assert not config & RUN_FIELDS, name  # no model config holds a run setting
        assert set(cls.setting_fields()) == config | RUN_FIELDS, name
    with pytest.raises(ValueError, match="device must be"):
        create("ease", {"device": "gpu"})


def test_a_checkpoint_dir_a_model_cannot_resume_from_is_an_error(tmp_path):
    """A model that gives `train_by_epochs` no optimizer and data to checkpoint (the LM
    backend) refuses `checkpoint_dir` instead of ignoring it."""
    from types import SimpleNamespace

    from directrec.models.settings import RunSettings, TrainConfig
    from directrec.models.training import train_by_epochs

    model = SimpleNamespace(
        name="m",
        config=TrainConfig(epochs=1),
        run=RunSettings(checkpoint_dir=str(tmp_path / "ck")),
        meta={},
    )
    with pytest.raises(ValueError, match="m: checkpoint_dir is not supported"):
        train_by_epochs(model, nn.Linear(1, 1), lambda e, run: 0.0, None)
    model.run = RunSettings()
    train_by_epochs(model, nn.Linear(1, 1), lambda e, run: 0.0, None)
    assert model.meta["stopped_by"] == "epochs" and len(model.meta["train_log"]) == 1


def test_length_batches_cover_every_window_once_and_cut_padding():
    """Padding-aware batching: each epoch still visits every window exactly once, in an
    order that changes with the seed, and the batches hold far less padding."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 101, (2000,), generator=g)
    windows = (torch.arange(100)[None, :] >= 100 - lengths[:, None]).long()  # left-padded
    torch.manual_seed(1)
    plain = batches(windows, 32, by_length=False)
    torch.manual_seed(1)
    bucketed = batches(windows, 32, by_length=True)
    for cut in (plain, bucketed):
        assert sorted(torch.cat(cut).tolist()) == list(range(2000))

    def width(cut):  # columns kept after trimming all-padding columns, summed over batches
        return sum(int(lengths[b].max()) * len(b) for b in cut)

    assert width(bucketed) < 0.7 * width(plain)
    torch.manual_seed(2)
    assert torch.cat(batches(windows, 32, by_length=True)).tolist() != torch.cat(bucketed).tolist()


def test_plain_batches_are_one_permutation_cut_in_order_and_no_windows_is_no_work():
    """Without `by_length` the batches are torch's one permutation of the rows cut in order
    (what random batching always drew, so runs made before length batching repeat
    exactly); no rows give no row to train on either way."""
    torch.manual_seed(3)
    cut = batches(torch.ones(10, 4), 3, by_length=False)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert [b.tolist() for b in cut] == [b.tolist() for b in torch.randperm(10).split(3)]
    assert torch.equal(after, torch.rand(1))
    for by_length in (True, False):
        assert sum(len(b) for b in batches(torch.ones(0, 4), 3, by_length)) == 0


CLASSIC = {  # the networks of the classic baselines, small
    "multvae": {"hidden": 16, "latent": 8, "batch_size": 32, "anneal_steps": 50},
    "cfgan": {"hidden": 16, "batch_size": 32, "lr": 1e-3, "lr_d": 5e-4},
}


def classic_weights(model):
    return (model.net if model.name == "multvae" else model.gen).state_dict()


@pytest.mark.parametrize("name", ["multvae", "cfgan"])
def test_classic_networks_validation_keeps_the_best_epoch_and_stops_on_patience(name, planted):
    train = leave_one_out(planted.interactions).stage("valid")[0]
    calls = iter([0.3, 0.5, 0.4, 0.2, 0.1, 0.05])
    model = create(name, {**CLASSIC[name], "epochs": 50, "eval_every": 1, "patience": 3})
    model.fit(train, validator=lambda m: next(calls))
    assert model.meta["best_epoch"] == 2 and len(model.meta["train_log"]) == 5
    assert model.meta["stopped_by"] == "patience"
    assert model.capabilities.early_stopping


@pytest.mark.parametrize("name", ["multvae", "cfgan"])
def test_classic_networks_resume_exactly(name, planted, tmp_path):
    train = leave_one_out(planted.interactions).stage("valid")[0]
    straight = create(name, {**CLASSIC[name], "epochs": 3}).fit(train)
    ckpt = str(tmp_path / "ckpt")
    create(name, {**CLASSIC[name], "epochs": 1, "checkpoint_dir": ckpt}).fit(train)
    resumed = create(name, {**CLASSIC[name], "epochs": 3, "checkpoint_dir": ckpt}).fit(train)
    assert len(resumed.meta["train_log"]) == 3
    for (k, a), b in zip(
        classic_weights(straight).items(), classic_weights(resumed).values(), strict=True
    ):
        assert torch.equal(a, b), k


def test_a_refitting_update_trains_anew_and_leaves_the_checkpoint_alone(planted, tmp_path):
    """A model without warm starts refits on update: its parent's checkpoint_dir belongs to
    the parent's run and is neither resumed nor refused."""
    train = leave_one_out(planted.interactions).stage("valid")[0]
    ckpt = str(tmp_path / "ckpt")
    model = create("cfgan", {**CLASSIC["cfgan"], "epochs": 2, "checkpoint_dir": ckpt})
    model.fit(train)
    new = model.update(planted.interactions)
    assert len(new.meta["train_log"]) == 2 and new.run.checkpoint_dir == ""


def test_multvae_anneals_on_from_the_epoch_it_kept(planted, tmp_path):
    """β's annealing step is that of the weights kept, saved with the model, and an update
    goes on from it."""
    from directrec.models import load_model

    train = leave_one_out(planted.interactions).stage("valid")[0]
    c = {**CLASSIC["multvae"], "epochs": 3, "eval_every": 1, "patience": 5}
    calls = iter([0.1, 0.3, 0.2])
    model = create("multvae", c).fit(train, validator=lambda m: next(calls))
    per_epoch = -(-int((train.matrix("binary").getnnz(1) > 0).sum()) // c["batch_size"])
    assert model.meta["best_epoch"] == 2 and model.step == 2 * per_epoch
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.step == 2 * per_epoch
    assert loaded.update(train, epochs=1).step == 3 * per_epoch
