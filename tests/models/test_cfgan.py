"""CFGAN ranks by the generator's logits, so a saturated sigmoid cannot tie items; its two
players share one optimizer at their own rates."""

from __future__ import annotations

import torch

from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.models import create


def test_scores_keep_the_order_a_saturated_sigmoid_loses(planted):
    data = planted.interactions
    model = create("cfgan", {"hidden": 8, "epochs": 1, "batch_size": 64}).fit(data)
    n = model.n_items
    last = model.gen[-2]  # the output layer, before the sigmoid
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.linspace(20.0, 40.0, n))  # every sigmoid rounds to 1.0
    histories = Histories.from_interactions(data, [0, 1])
    assert torch.sigmoid(last.bias).eq(1.0).all()  # the ties the logits avoid
    scores = model.score(histories)
    assert (scores.diff(dim=1) > 0).all()


def test_the_players_step_at_their_own_rates(planted, monkeypatch):
    """One Adam holds both players; each group keeps its rate through the loop, and a
    discriminator step leaves the generator alone (it has no gradient there)."""
    seen: list[list[float]] = []
    moved: list[tuple[bool, bool]] = []  # (generator has gradients, discriminator has)
    step = torch.optim.Adam.step

    def spy(self, *a, **kw):
        seen.append([g["lr"] for g in self.param_groups])
        gen, disc = (any(p.grad is not None for p in g["params"]) for g in self.param_groups)
        moved.append((gen, disc))
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    train = leave_one_out(planted.interactions).stage("valid")[0]
    model = create("cfgan", {"hidden": 16, "batch_size": 32, "lr": 1e-3, "lr_d": 5e-4, "epochs": 2})
    model.fit(train)
    assert seen and all(rates == [1e-3, 5e-4] for rates in seen)
    assert moved[:4] == [(False, True), (True, False)] * 2  # D's step, then G's
    assert set(moved) == {(False, True), (True, False)}


def test_a_model_saved_with_lr_g_keeps_its_generator_rate(planted, tmp_path):
    """`lr_g` became `lr`: a model saved with the old name loads at its own rate, and the
    recipe it carries still says how it was made."""
    import json

    from directrec.models import load_model
    from directrec.recipes import resolve, stored

    model = create("cfgan", {"hidden": 8, "epochs": 1, "lr": 1e-3})
    model.fit(planted.interactions)
    recipe = resolve("cfgan").with_overrides(["lr=0.001", "epochs=1"]).to_dict()
    recipe["settings"]["lr_g"] = recipe["settings"].pop("lr")
    model.meta["recipe"] = recipe
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    doc["config"]["lr_g"] = doc["config"].pop("lr")
    (tmp_path / "m" / "config.json").write_text(json.dumps(doc))
    loaded = load_model(tmp_path / "m")
    assert loaded.config.lr == 1e-3
    assert stored(loaded.meta, "m").settings["lr"] == 1e-3
