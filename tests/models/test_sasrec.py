"""SASRec specifics: early stopping, exact resume from a checkpoint, the three losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.evaluate.protocol import evaluate
from directrec.models import create, load_model, training
from tests.models.settings import cosine_rates, record_rates

SMALL = {"max_len": 20, "dim": 16, "heads": 2, "layers": 1, "batch_size": 64, "lr": 3e-3}


@pytest.fixture(scope="module")
def train(planted):
    return leave_one_out(planted.interactions).stage("valid")[0]


def test_last_window_left_pads_newest_last(planted):
    w = Histories.from_interactions(planted.interactions).windows(5)
    seq = planted.interactions.sequences()[0]
    assert w[0].tolist() == (seq[-5:] + 1).tolist()
    short = Histories.from_interactions(planted.interactions).windows(100)
    n = len(seq)
    assert (short[0, : 100 - n] == 0).all() and short[0, -1] == seq[-1] + 1


def test_early_stopping_keeps_the_best_epoch(train):
    calls = iter([0.3, 0.5, 0.4, 0.2, 0.1, 0.05])
    model = create("sasrec-ce", {**SMALL, "epochs": 50, "eval_every": 1, "patience": 3})
    model.fit(train, validator=lambda m: next(calls))
    assert model.meta["best_epoch"] == 2 and len(model.meta["train_log"]) == 5
    assert model.meta["best_valid_ndcg@10"] == 0.5


@pytest.mark.parametrize("extra", [{}, {"average": 0.5}])
def test_resume_is_exact(train, tmp_path, extra):
    """Also with the weight average on: its running average is part of the checkpoint."""
    straight = create("sasrec-ce", {**SMALL, **extra, "epochs": 4}).fit(train)
    ckpt = str(tmp_path / "ckpt")
    create("sasrec-ce", {**SMALL, **extra, "epochs": 2, "checkpoint_dir": ckpt}).fit(train)
    # A longer schedule resumes where the shorter one stopped.
    cfg = {**SMALL, **extra, "epochs": 4, "checkpoint_dir": ckpt}
    resumed = create("sasrec-ce", cfg).fit(train)
    assert len(resumed.meta["train_log"]) == 4
    for (k, a), b in zip(
        straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k


def test_resume_refuses_a_foreign_checkpoint(train, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    create("sasrec-ce", {**SMALL, "epochs": 1, "checkpoint_dir": ckpt}).fit(train)
    with pytest.raises(ValueError, match="another config"):
        create("sasrec-ce", {**SMALL, "epochs": 1, "dim": 8, "checkpoint_dir": ckpt}).fit(train)


def test_resume_reads_a_checkpoint_older_than_a_setting(train, tmp_path):
    """A checkpoint written before `cooldown` existed ran at its default: it resumes under
    the default and is refused under another value."""
    ckpt = tmp_path / "ckpt"
    create("sasrec-ce", {**SMALL, "epochs": 1, "checkpoint_dir": str(ckpt)}).fit(train)
    info = json.loads((ckpt / "progress.json").read_text())
    del info["config"]["cooldown"]
    (ckpt / "progress.json").write_text(json.dumps(info))
    other = {**SMALL, "epochs": 2, "cooldown": 0.5, "checkpoint_dir": str(ckpt)}
    with pytest.raises(ValueError, match="another config"):
        create("sasrec-ce", other).fit(train)
    resumed = create("sasrec-ce", {**SMALL, "epochs": 2, "checkpoint_dir": str(ckpt)}).fit(train)
    assert len(resumed.meta["train_log"]) == 2


@pytest.mark.parametrize("loss", ["ce", "sampled", "bce"])
def test_each_loss_learns_to_rank(loss, planted):
    """Every loss lowers its training loss and ranks validation items far above
    popularity (the `sampled` loss is behind the ML-1M figure, so it is held to it too)."""
    fit, seen, targets = leave_one_out(planted.interactions).stage("valid")
    model = create("sasrec", {**SMALL, "epochs": 40, "loss": loss, "negatives": 32}).fit(fit)
    losses = [r["loss"] for r in model.meta["train_log"]]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    pop = evaluate(create("pop").fit(fit), fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr >= max(2 * pop, pop + 0.2), f"{loss}: HR@10 {hr:.3f} vs popularity {pop:.3f}"


def test_cosine_decay_sets_each_epochs_rate_and_resumes_exactly(train, tmp_path, monkeypatch):
    """`lr_decay=cosine`: epoch e trains at lr · (1 + cos(π e / epochs)) / 2, a function of
    the epoch alone, so a run resumed from a checkpoint ends on the same weights."""
    cfg = {**SMALL, "epochs": 4, "lr_decay": "cosine"}
    model = create("sasrec-ce", cfg)
    rates = record_rates(monkeypatch, model, "_epoch")
    straight = model.fit(train)
    assert rates == pytest.approx(cosine_rates(SMALL["lr"], 4))
    # interrupted after its 2nd epoch (checkpoint written), then resumed by a fresh process
    ckpt = str(tmp_path / "ckpt")
    cut = create("sasrec-ce", {**cfg, "checkpoint_dir": ckpt})
    write = training.save_checkpoint

    def crash_after_two(path, net, opt, state, config, fingerprint):
        write(path, net, opt, state, config, fingerprint)
        if state.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        cut.fit(train)
    resumed = create("sasrec-ce", {**cfg, "checkpoint_dir": ckpt}).fit(train)
    assert len(resumed.meta["train_log"]) == 4
    for (k, a), b in zip(
        straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k


def test_constant_rate_by_default_and_a_bad_decay_is_refused(train, monkeypatch):
    model = create("sasrec-ce", {**SMALL, "epochs": 3})
    rates = record_rates(monkeypatch, model, "_epoch")
    model.fit(train)
    assert rates == [SMALL["lr"]] * 3
    with pytest.raises(ValueError, match="lr_decay"):
        create("sasrec-ce", {**SMALL, "epochs": 1, "lr_decay": "linear"}).fit(train)


def test_cooldown_holds_the_rate_then_steps_it_down(train, monkeypatch):
    """`lr_decay=cooldown`: 5 epochs with a 0.4 share keep lr for 3 epochs, then train the
    last n = 2 at 2/3 and 1/3 of it (by hand); a share outside (0, 1] is refused."""
    model = create("sasrec-ce", {**SMALL, "epochs": 5, "lr_decay": "cooldown", "cooldown": 0.4})
    rates = record_rates(monkeypatch, model, "_epoch")
    model.fit(train)
    lr = SMALL["lr"]
    assert rates == pytest.approx([lr, lr, lr, lr * 2 / 3, lr / 3])
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="cooldown"):
            create(
                "sasrec-ce", {**SMALL, "epochs": 1, "lr_decay": "cooldown", "cooldown": bad}
            ).fit(train)


def test_deterministic_with_a_seed(train):
    a = create("sasrec-ce", {**SMALL, "epochs": 2}).fit(train)
    b = create("sasrec-ce", {**SMALL, "epochs": 2}).fit(train)
    h = Histories.from_interactions(train, np.arange(5))
    assert torch.equal(a.score(h), b.score(h))


def test_time_budget_stops_mid_epoch_and_validates(train):
    """A 0.12-second budget against epochs of one window a batch (a second or more each): the
    first epoch's batches stop at the budget, the run validates and ends within the budget
    plus a batch and a validation. An alarm fails the test instead of letting a broken
    budget run on."""
    import signal
    import time

    def hung(*_):
        raise TimeoutError("the time budget did not stop the run")

    seen: list[int] = []
    cfg = {**SMALL, "epochs": 50, "batch_size": 1, "pack": False, "max_minutes": 0.002}
    model = create("sasrec-ce", cfg)
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        t0 = time.perf_counter()
        model.fit(train, validator=lambda m: seen.append(1) or 0.1)
        took = time.perf_counter() - t0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    log = model.meta["train_log"]
    assert model.meta["stopped_by"] == "time budget" and len(log) == 1 and seen == [1]
    assert log[0]["cut_by_budget"] and "valid_ndcg@10" in log[0]
    # budget + one batch + one validation, plus set-up (generous: a shared CI machine);
    # 50 uncut epochs of 300 one-window batches would take minutes and trip the alarm
    assert took < 0.12 + 10.0


def test_no_time_budget_by_default():
    """Defaults that learn: epochs and early stopping end a run, not a clock."""
    for name in ("sasrec", "sasrec-ce", "semantic-id", "llm"):
        assert create(name).config.max_minutes == 0.0


def test_attention_dropout_can_be_switched_off_alone():
    """attn_dropout < 0 (the default) follows dropout; 0 turns off only the attention's."""
    for settings, attn in (({"attn_dropout": 0.0}, 0.0), ({}, 0.3)):
        m = create("sasrec-ce", SMALL | {"dropout": 0.3} | settings)
        m.n_items = 10
        blocks = m._build().blocks
        assert all(b.attn_dropout == attn and b.dropout == 0.3 for b in blocks)


def test_mlp_ratio_sets_the_feed_forward_width():
    """mlp_ratio=1 is the original SASRec's feed-forward (dim → dim → dim); 4 is the default."""
    for ratio in (1, 4):
        m = create("sasrec-ce", SMALL | {"mlp_ratio": ratio})
        m.n_items = 10
        net = m._build()
        assert all(b.mlp[0].out_features == ratio * net.dim for b in net.blocks)


def test_packed_batches_train_exactly_as_random_batches(train):
    """`pack`: the same random batches, their windows side by side in shared rows with
    attention kept within each window. Without dropout (the only random draw whose shape
    packing changes) an epoch ends on the same weights as unpacked random batches."""
    cfg = {**SMALL, "epochs": 2, "dropout": 0.0, "length_batches": False}
    plain = create("sasrec-ce", cfg | {"pack": False}).fit(train)
    packed = create("sasrec-ce", cfg | {"pack": True}).fit(train)
    assert packed.meta["train_log"][-1]["loss"] == pytest.approx(
        plain.meta["train_log"][-1]["loss"], rel=1e-4
    )
    # Compared by what the models compute: the key bias has an exactly-zero gradient (the
    # softmax ignores it), so Adam turns its float noise into arbitrary, harmless values.
    h = Histories.from_interactions(train, np.arange(40))
    torch.testing.assert_close(plain.score(h), packed.score(h), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(plain.net.item.weight, packed.net.item.weight, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "option",
    [
        {"lr_decay": "cosine"},
        {"lr_decay": "cooldown"},
        {"attn_dropout": 0.2, "drop_keys": True},  # DropKey, the fused-kernel path
        {"average": 0.8},  # validate and keep the epochs' moving-average weights
        {"pack": False},  # length batches instead of packed random batches
        {"optimizer": "adamw", "weight_decay": 0.1},  # decoupled decay at GPT's 0.1
    ],
    ids=["cosine", "cooldown", "drop-keys", "average", "length-batches", "adamw"],
)
def test_each_training_option_learns_to_rank(planted, option):
    """Every non-default training option of the ML-1M recipes still learns: 40 epochs
    rank validation items far above popularity (the defaults are every other test's)."""
    fit, seen, targets = leave_one_out(planted.interactions).stage("valid")
    model = create("sasrec-ce", {**SMALL, "epochs": 40, **option}).fit(fit)
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    pop = evaluate(create("pop").fit(fit), fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr >= max(2 * pop, pop + 0.2), f"{option}: HR@10 {hr:.3f} vs popularity {pop:.3f}"


@pytest.mark.parametrize("loss", ["ce", "sampled"])
def test_cosine_scores_learn_bounded_and_survive_save_load(loss, planted, tmp_path):
    """temperature > 0 scores items by cosine / temperature (HSTU's head): it learns to rank
    with the full and the sampled softmax, no score exceeds 1/temperature, and a saved
    model scores the same after loading."""
    fit, seen, targets = leave_one_out(planted.interactions).stage("valid")
    cfg = {**SMALL, "epochs": 40, "loss": loss, "negatives": 32, "temperature": 0.1}
    model = create("sasrec-ce", cfg).fit(fit)
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    pop = evaluate(create("pop").fit(fit), fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr >= max(2 * pop, pop + 0.2), f"{loss}: HR@10 {hr:.3f} vs popularity {pop:.3f}"
    h = Histories.from_interactions(fit, np.arange(40))
    scores = model.score(h)
    assert float(scores.abs().max()) <= 10.0 + 1e-4
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.temperature == 0.1
    torch.testing.assert_close(loaded.score(h), scores)


def test_a_negative_temperature_is_refused():
    """0 means the dot product; a negative temperature has no meaning and is refused when
    the model is created, not when it trains."""
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        create("sasrec-ce", {**SMALL, "epochs": 1, "temperature": -0.1})


def test_adamw_decays_matrices_and_embeddings_not_biases_or_norms(train):
    """Decoupled decay shrinks the item embeddings (a strong decay leaves them far smaller
    than none does) and its group holds exactly the ≥ 2-D parameters."""
    norms = {}
    for wd in (0.0, 5.0):
        cfg = {**SMALL, "epochs": 3, "optimizer": "adamw", "weight_decay": wd}
        model = create("sasrec-ce", cfg).fit(train)
        norms[wd] = float(model.net.item.weight.detach().norm())
        decayed, kept = model._optimizer().param_groups
        assert decayed["weight_decay"] == wd and kept["weight_decay"] == 0.0
        assert all(p.dim() >= 2 for p in decayed["params"])
        assert all(p.dim() == 1 for p in kept["params"])
        n_params = len(list(model.net.parameters()))
        assert len(decayed["params"]) + len(kept["params"]) == n_params
    assert norms[5.0] < 0.8 * norms[0.0], norms


def test_an_unknown_optimizer_is_refused():
    """Only adam and adamw exist; anything else fails when the model is created."""
    with pytest.raises(ValueError, match="optimizer must be adam or adamw"):
        create("sasrec-ce", {**SMALL, "epochs": 1, "optimizer": "sgd"})


def test_all_windows_train_on_every_interaction_and_learn(planted, monkeypatch):
    """windows=all tiles each whole history (`Histories.tiles`), so every interaction but a
    user's first is a target once, where `last` trains on the last max_len + 1 only; it
    learns to rank from a context of 5."""
    from directrec.models.sasrec import SASRec

    fit, seen, targets = leave_one_out(planted.interactions).stage("valid")
    seen_targets: dict[str, int] = {}
    real_epoch = SASRec._epoch

    def counting(self, windows, *args):
        seen_targets[self.config.windows] = int(
            ((windows[:, :-1] > 0) & (windows[:, 1:] > 0)).sum()
        )
        return real_epoch(self, windows, *args)

    monkeypatch.setattr(SASRec, "_epoch", counting)
    cfg = {**SMALL, "max_len": 5, "epochs": 40}
    model = create("sasrec-ce", {**cfg, "windows": "all"}).fit(fit)
    create("sasrec-ce", {**cfg, "windows": "last", "epochs": 1}).fit(fit)
    users = len(np.unique(fit.user))
    assert seen_targets["all"] == len(fit.item) - users
    assert seen_targets["last"] < seen_targets["all"]
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    pop = evaluate(create("pop").fit(fit), fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr >= max(2 * pop, pop + 0.2), f"HR@10 {hr:.3f} vs popularity {pop:.3f}"


def test_an_unknown_windows_choice_is_refused():
    with pytest.raises(ValueError, match="windows must be last or all"):
        create("sasrec-ce", {**SMALL, "epochs": 1, "windows": "some"})


@pytest.mark.parametrize(
    ("bad", "name"),
    [({"heads": 3}, "heads"), ({"loss": "mse"}, "loss"), ({"max_len": 0}, "max_len")],
)
def test_network_settings_are_checked_at_create(bad, name):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        create("sasrec-ce", {**SMALL, **bad})
