"""Differential privacy (DP-SGD through Opacus, `models/privacy.py`): the accountant spends
what was asked and no more, the artefact and `recipes show --model` say what was spent, bad
budgets are refused, and a private model still learns."""

from __future__ import annotations

import json

import pytest
from opacus.accountants import RDPAccountant

from directrec.data.split import leave_one_out
from directrec.evaluate.protocol import evaluate
from directrec.models import create, load_model
from directrec.recipes import Recipe
from tests.test_cli import run, store  # noqa: F401 (the CLI's tiny store fixture)

TINY = {"max_len": 10, "dim": 8, "heads": 1, "layers": 1, "batch_size": 50, "lr": 1e-2}


@pytest.fixture(scope="module")
def stage(planted):
    return leave_one_out(planted.interactions).stage("test")


@pytest.fixture(scope="module")
def private(stage):
    fit = stage[0]
    return create("sasrec-ce", {**TINY, "epochs": 3, "dp_epsilon": 2.0}).fit(fit)


def test_the_accountant_spends_the_budget_and_no_more(private, stage):
    dp = private.meta["dp"]
    users = stage[0].n_users
    assert dp["delta"] == pytest.approx(1 / users)  # the default δ: 1 / training users
    assert dp["sample_rate"] == pytest.approx(50 / users) and dp["unit"] == "user"
    assert dp["steps"] == 3 * round(users / 50)  # every planned step was taken
    # ε is within the target, and the noise is not wasted: close to it
    assert 0.9 * 2.0 <= dp["epsilon_spent"] <= 2.0
    # an accountant of our own, fed the recorded noise and steps, agrees
    acc = RDPAccountant()
    acc.history = [(dp["noise_multiplier"], dp["sample_rate"], dp["steps"])]
    assert acc.get_epsilon(dp["delta"]) == pytest.approx(dp["epsilon_spent"], abs=1e-3)
    # and more noise would have been needed for a smaller budget
    tighter = create("sasrec-ce", {**TINY, "epochs": 1, "dp_epsilon": 0.5}).fit(stage[0])
    assert tighter.meta["dp"]["noise_multiplier"] > dp["noise_multiplier"]


def test_stopping_early_spends_less(stage):
    """Patience ends the run after two of six epochs: ε is what those steps spent."""
    scores = iter([0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    cfg = {**TINY, "epochs": 6, "eval_every": 1, "patience": 1, "dp_epsilon": 3.0}
    model = create("sasrec-ce", cfg).fit(stage[0], validator=lambda m: next(scores))
    dp = model.meta["dp"]
    assert model.meta["stopped_by"] == "patience" and len(model.meta["train_log"]) == 2
    assert dp["steps"] == 2 * round(stage[0].n_users / 50)
    assert dp["epsilon_spent"] < 0.8 * 3.0


def test_the_artefact_keeps_the_spent_budget(private, tmp_path):
    private.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["config"]["dp_epsilon"] == 2.0
    assert saved["meta"]["dp"]["epsilon_spent"] == private.meta["dp"]["epsilon_spent"]
    assert load_model(tmp_path / "m").meta["dp"] == private.meta["dp"]


def test_recipes_show_prints_epsilon_and_delta(store, tmp_path):  # noqa: F811
    _, db = store
    out = tmp_path / "dp"
    sets = ["max_len=10", "dim=8", "heads=1", "layers=1", "epochs=2", "dp_epsilon=4"]
    res = run(
        "train", "sasrec-ce", "--db", db, "--out", out, *[x for s in sets for x in ("--set", s)]
    )
    assert res.exit_code == 0, res.output
    spent = json.loads((out / "config.json").read_text())["meta"]["dp"]
    res = run("recipes", "show", "--model", out)
    assert res.exit_code == 0, res.output
    assert f"ε = {spent['epsilon_spent']:g} spent of 4" in res.output
    assert f"δ = {spent['delta']:.3g}" in res.output
    assert Recipe.from_text(res.output, "shown").settings["dp_epsilon"] == 4.0  # still a recipe


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"dp_epsilon": -1.0}, "dp_epsilon must be a finite privacy budget > 0"),
        ({"dp_epsilon": float("inf")}, "dp_epsilon must be a finite"),
        ({"dp_epsilon": 1.0, "dp_delta": 1.0}, "dp_delta must be in (0, 1)"),
        ({"dp_epsilon": 1.0, "dp_delta": -0.1}, "dp_delta must be in (0, 1)"),
        ({"dp_epsilon": 1.0, "dp_max_grad_norm": 0.0}, "dp_max_grad_norm must be a finite norm"),
        ({"dp_epsilon": 1.0, "windows": "all"}, "dp_epsilon needs windows=last"),
        ({"dp_epsilon": 1.0, "loss": "sampled"}, "dp_epsilon needs loss=ce or loss=bce"),
    ],
)
def test_bad_budgets_are_refused_when_the_config_is_built(settings, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        create("sasrec-ce", settings)


def test_unsupported_uses_are_refused(store, stage, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="not supported by semantic-id"):
        create("semantic-id", {"dp_epsilon": 1.0})
    for name in ("gru4rec", "bert4rec"):  # never trained without the privacy asked for
        with pytest.raises(ValueError, match="not supported by gru4rec or bert4rec"):
            create(name, {"dp_epsilon": 1.0})
    cfg = {**TINY, "epochs": 1, "dp_epsilon": 1.0, "checkpoint_dir": str(tmp_path / "c")}
    with pytest.raises(ValueError, match="without checkpoint_dir"):
        create("sasrec-ce", cfg).fit(stage[0])
    _, db = store  # on the command line: exit 2, the setting named, nothing written
    res = run("train", "sasrec-ce", "--db", db, "--out", tmp_path / "x", "--set", "dp_delta=2")
    assert res.exit_code == 2 and "dp_delta must be in (0, 1)" in res.output
    assert not (tmp_path / "x").exists()


def test_a_warm_update_spends_on_top_of_its_parent(private, stage):
    dp = private.meta["dp"]
    with pytest.raises(ValueError, match="already spent"):
        private.update(stage[0], epochs=1, settings={"dp_epsilon": 1.0})
    child = private.update(stage[0], epochs=1, settings={"dp_epsilon": 3.0})
    spent = child.meta["dp"]
    assert len(spent["history"]) == 2 and spent["history"][0] == dp["history"][0]
    assert dp["epsilon_spent"] < spent["epsilon_spent"] <= 3.0


def test_a_private_model_beats_popularity_at_a_large_epsilon(stage):
    fit, seen, targets = stage
    pop = evaluate(create("pop").fit(fit), fit, targets, (10,), seen=seen).metrics["hr@10"]
    cfg = {**TINY, "max_len": 20, "dim": 16, "epochs": 10, "batch_size": 60, "dp_epsilon": 50.0}
    model = create("sasrec-ce", cfg).fit(fit)
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert hr >= max(2 * pop, pop + 0.2), f"HR@10 {hr:.3f} vs popularity {pop:.3f}"


def test_the_learning_rate_schedule_holds_under_dp(stage, monkeypatch):
    """The private epochs run the same lr_decay as the others (the DP optimizer's groups)."""
    from directrec.models import privacy
    from tests.models.settings import cosine_rates

    rates: list[float] = []
    real = privacy.PrivateSteps.step

    def spy(self, *args, **kwargs):
        rates.append(self.opt.param_groups[0]["lr"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(privacy.PrivateSteps, "step", spy)
    cfg = {**TINY, "epochs": 2, "lr_decay": "cosine", "dp_epsilon": 5.0}
    create("sasrec-ce", cfg).fit(stage[0])
    per_epoch = round(stage[0].n_users / 50)
    assert rates == pytest.approx([r for r in cosine_rates(1e-2, 2) for _ in range(per_epoch)])


def test_per_user_gradients_are_exact(stage):
    """vmap's per-example gradients (tied item table, fused attention) equal each window's
    own backward pass, padding trimmed or not: what Opacus clips is each user's gradient."""
    import torch

    from directrec.data.histories import Histories
    from directrec.models.privacy import per_example_grads

    model = create("sasrec-ce", {**TINY, "dropout": 0.0, "epochs": 0}).fit(stage[0])
    windows = torch.from_numpy(Histories.from_interactions(stage[0]).windows(11))[:5]
    windows[0, :6] = 0  # a short history: left padding
    grads, losses = per_example_grads(model.net, model._example_loss, windows)
    for i, w in enumerate(windows):
        model.net.zero_grad()
        one = model._example_loss(w[None])
        one.backward()
        assert losses[i].item() == pytest.approx(one.item(), rel=1e-5)
        for name, p in model.net.named_parameters():
            assert torch.allclose(grads[name][i], p.grad, atol=1e-6), (i, name)
