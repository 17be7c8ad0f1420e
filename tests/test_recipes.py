"""Recipes: every shipped one loads and is typed; bad files are refused naming the file, the
key and the closest valid names; --set wins over a recipe; figures stay with their settings."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest

from directrec import recipes as R
from directrec.generate.fitting import STAGE_PARAMS
from directrec.models import MODELS
from directrec.models.artifacts import saved_before
from directrec.models.settings import PARTS, RUN_FIELDS

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = """
[recipe]
version = 1
name = "mine"
model = "sasrec-ce"
description = "a test recipe"

[settings]
layers = 3
lr = 0.002
"""


@pytest.mark.parametrize("name", R.shipped())
def test_every_shipped_recipe_loads_typed_and_round_trips(name):
    r = R.resolve(name)
    assert r.name == name and r.model in MODELS and r.summary()
    defaults = R.setting_defaults(r.model)
    for key, value in r.settings.items():  # every key a real setting, of its default's type
        assert key in defaults
        assert type(value) is type(defaults[key]), (name, key)
    assert set(r.stages) <= set(STAGE_PARAMS)
    again = R.Recipe.from_dict(tomllib.loads(r.to_toml()), "round trip")
    assert again.to_dict() == r.to_dict()


def test_shipped_names():
    assert {
        "sasrec-ce",
        "semantic-id",
        "sasrec",
        "llm",
        "ml1m-sasrec-ce",
        "beauty-semantic-id",
        "amazon-5core",
        "coldstart",
        "fast-cpu",
    } <= set(R.shipped())


@pytest.mark.parametrize("name", [n for n in R.shipped() if n in MODELS])
def test_a_models_own_recipe_is_its_defaults(name):
    """`train MODEL` runs the recipe named like the model: it must say the same as the
    model's defaults (a changed default has to change the recipe too)."""
    r = R.resolve(name)
    defaults = R.setting_defaults(name)
    assert {k: defaults[k] for k in r.settings} == r.settings


@pytest.mark.parametrize("name", [n for n in R.shipped() if R.resolve(n).measured])
def test_measured_figures_come_from_these_settings(name):
    """A recipe's measured figure is in the results document it cites, produced by a run
    whose model config is the recipe's settings over the defaults, under its protocol."""
    r = R.resolve(name)
    doc = json.loads((ROOT / r.measured.results).read_text())
    if doc.get("protocol") in PROTOCOLS:  # a cold-start protocol's tables
        return check_protocol_figure(name, r, doc)
    (res,) = [x for x in doc["results"] if x["model"] == r.model]
    want = {**R.setting_defaults(r.model), **r.settings}
    skip = {"seed", *RUN_FIELDS}  # run settings are not part of a model's config
    if "id_weight_valid" in res:  # the hybrid's ID weight is chosen on validation by the fit
        skip.add("id_weight")
    # a setting added after the run is absent from its config: it ran at its default, or
    # at the value the model's config records for configs saved before it (`saved_before`)
    before = saved_before(MODELS[r.model].Config)
    ran = {**R.setting_defaults(r.model), **before, **res["config"]}
    assert {k: v for k, v in ran.items() if k not in skip} == {
        k: v for k, v in want.items() if k not in skip
    }
    m = res["metrics"]
    assert f"HR@10 {m['hr@10']:.4f}" in r.measured.figure
    assert f"NDCG@10 {m['ndcg@10']:.4f}" in r.measured.figure
    proto = r.benchmark
    assert doc["spec"]["split"] == proto.split and doc["spec"]["ks"] == list(proto.k)
    assert doc["spec"]["max_history"] == proto.max_history
    assert doc["spec"]["valid_users"] == proto.valid_users
    assert f"--recipe {name} " in r.measured.command


PROTOCOLS = ("cold-items", "new-users")  # benchmark --protocol's documents


def check_protocol_figure(name: str, r: R.Recipe, doc: dict) -> None:
    """The cold-items figure a recipe quotes: its run used the recipe's settings and
    stage parameters, and the figure is the gated model's."""
    assert doc["protocol"] == "cold-items" and f"--protocol {doc['protocol']}" in r.measured.command
    assert f"--recipe {name} " in r.measured.command
    assert doc["settings"][r.model] == {"seed": doc["seed"], **r.settings}
    assert doc["max_history"] == r.benchmark.max_history
    m = doc["models"][r.model]
    assert f"cold Recall@10 {m['cold_targets']['recall@10']:.4f}" in r.measured.figure
    assert f"warm NDCG@10 {m['warm_targets']['ndcg@10']:.4f}" in r.measured.figure


# Recipes whose point is a wall-clock budget: a quick first model on a CPU.
BUDGETED = {"fast-cpu"}


@pytest.mark.parametrize("name", sorted(set(R.shipped()) - BUDGETED))
def test_a_recipe_learns_the_same_however_busy_the_machine_is(name):
    """No wall-clock budget: what the recipe trains (and the figure it quotes) depends on
    its settings and seed, not on how loaded the machine was."""
    r = R.resolve(name)
    assert not r.settings.get("max_minutes"), name
    if r.measured is not None:
        doc = json.loads((ROOT / r.measured.results).read_text())
        if doc.get("protocol") in PROTOCOLS:
            assert "max_minutes" not in doc["settings"][r.model], name
            assert doc["models"][r.model]["stopped"].startswith(("converged", "epochs")), name
            return
        (res,) = [x for x in doc["results"] if x["model"] == r.model]
        assert not res["config"].get("max_minutes"), name
        assert "budget" not in str(res.get("stopped", "")), name


def test_file_recipe_loads_and_overrides_win(tmp_path):
    p = write(tmp_path, BASE)
    r = R.resolve(p)
    assert r.model == "sasrec-ce" and r.settings == {"layers": 3, "lr": 0.002}
    o = r.with_overrides(["lr=0.01", "sasrec-ce.dim=32"])
    assert o.settings == {"layers": 3, "lr": 0.01, "dim": 32}
    assert r.settings["lr"] == 0.002  # frozen: the original is untouched


def test_settings_by_part_read_the_same_and_each_part_holds_only_its_own(tmp_path):
    """A recipe file groups its settings by part ([network], [training], …); the parts are
    the model's, a key under another part's table is refused with the part it belongs to,
    and a setting given twice is refused."""
    parts = BASE.replace(
        "[settings]\nlayers = 3\nlr = 0.002\n", "[network]\nlayers = 3\n\n[training]\nlr = 0.002\n"
    )
    r = R.resolve(write(tmp_path, parts))
    assert r.settings == R.resolve(write(tmp_path, BASE, "flat.toml")).settings
    assert tomllib.loads(r.to_toml())["network"] == {"layers": 3}
    assert "settings" not in tomllib.loads(r.to_toml()) and r.to_dict()["settings"]
    wrong = parts.replace("[network]\nlayers = 3", "[network]\nlayers = 3\nlr = 0.1")
    p = write(tmp_path, wrong, "wrong.toml")
    with pytest.raises(
        R.RecipeError, match=r"\[network\]: 'lr' is a training setting.*\[training\]"
    ):
        R.resolve(p)
    twice = parts + "\n[settings]\nlayers = 2\n"
    with pytest.raises(R.RecipeError, match="'layers' is set twice"):
        R.resolve(write(tmp_path, twice, "twice.toml"))
    # every model's every setting has a part, and the network's come first in its listing
    for name, model in MODELS.items():
        got = model.setting_parts()
        assert set(got) == set(R.setting_defaults(name)) and set(got.values()) <= set(PARTS)


def test_a_network_is_built_from_its_own_small_config():
    """The generators' networks take their own config, a handful of fields, never the
    model's whole one; the model's Config combines it with training and decoding."""
    from directrec.models.bert4rec import BERT4RecNetConfig
    from directrec.models.gru4rec import GRU4RecNetConfig
    from directrec.models.hf import LMConfig
    from directrec.models.sasrec import SASRecNetConfig
    from directrec.models.semantic.network import SemanticNetConfig

    nets = {
        "sasrec-ce": SASRecNetConfig,
        "gru4rec": GRU4RecNetConfig,
        "bert4rec": BERT4RecNetConfig,
        "semantic-id": SemanticNetConfig,
        "llm": LMConfig,
    }
    for name, net in nets.items():
        parts = MODELS[name].setting_parts()
        own = {f.name for f in dataclasses.fields(net)}
        assert own == {k for k, p in parts.items() if p == "network"}, name
        assert len(own) <= 11, name
        built = net.of(MODELS[name].Config())
        assert dataclasses.asdict(built) == {k: getattr(MODELS[name].Config(), k) for k in own}


def test_unknown_setting_names_the_file_key_and_closest(tmp_path):
    p = write(tmp_path, BASE.replace("layers = 3", "layres = 3"))
    with pytest.raises(R.RecipeError) as e:
        R.resolve(p)
    msg = str(e.value)
    assert str(p) in msg and "'layres'" in msg and "'layers'" in msg
    with pytest.raises(R.RecipeError, match="'lr'"):
        R.resolve("sasrec-ce").with_overrides(["lrr=0.1"])
    with pytest.raises(R.RecipeError, match="trains sasrec-ce, not 'ease'"):
        R.resolve("sasrec-ce").with_overrides(["ease.l2=5"])


def test_unknown_stage_and_keys_are_refused(tmp_path):
    p = write(tmp_path, BASE + "\n[stages.prior_blnd]\nusers = 50\n")
    with pytest.raises(R.RecipeError, match=r"unknown stage 'prior_blnd'.*prior_blend"):
        R.resolve(p)
    p = write(tmp_path, BASE + "\n[stages.cold_gate]\nholdot = 0.1\n")
    with pytest.raises(R.RecipeError, match=r"no parameter 'holdot'.*holdout"):
        R.resolve(p)
    p = write(tmp_path, BASE.replace("[settings]", "[setings]"))
    with pytest.raises(R.RecipeError, match=r"unknown key 'setings'.*'settings'"):
        R.resolve(p)
    p = write(tmp_path, BASE + "\n[benchmark]\nmodels = ['pop', 'eas']\n")
    with pytest.raises(R.RecipeError, match=r"'eas'.*'ease'"):
        R.resolve(p)
    p = write(
        tmp_path, BASE + "\n[benchmark]\nmodels = ['ease']\n[benchmark.settings.ease]\nl3 = 1\n"
    )
    with pytest.raises(R.RecipeError, match=r"benchmark.settings.ease.*'l3'.*l2"):
        R.resolve(p)
    p = write(tmp_path, BASE.replace("version = 1", "version = 2"))
    with pytest.raises(R.RecipeError, match="version 2"):
        R.resolve(p)
    p = write(tmp_path, BASE.replace('model = "sasrec-ce"', 'model = "sasrec-c"'))
    with pytest.raises(R.RecipeError, match="'sasrec-ce'"):
        R.resolve(p)
    p = write(tmp_path, BASE.replace("lr = 0.002", "lr = "))
    with pytest.raises(R.RecipeError, match=re.escape(f"{p}: not valid TOML")):
        R.resolve(p)
    with pytest.raises(R.RecipeError, match="'sasrec-ce'"):
        R.resolve("sasrec-c")


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ('layers = "3"', "takes a int"),
        ("layers = 3.5", "takes a int"),
        ("layers = true", "takes a int"),
        ("pack = 1", "takes a bool"),
        ("windows = 2", "takes a str"),
    ],
)
def test_bad_types_are_refused(tmp_path, line, kind):
    p = write(tmp_path, BASE.replace("layers = 3", line))
    with pytest.raises(R.RecipeError, match=kind):
        R.resolve(p)


def test_an_int_is_a_float(tmp_path):
    r = R.resolve(write(tmp_path, BASE.replace("lr = 0.002", "lr = 1")))
    assert r.settings["lr"] == 1.0 and isinstance(r.settings["lr"], float)


def test_a_changed_setting_drops_the_measured_figure():
    r = R.resolve("ml1m-sasrec-ce")
    assert r.measured is not None
    assert r.with_overrides(["layers=4", "seed=42"]).measured == r.measured  # same values
    assert r.with_overrides(["layers=2"]).measured is None
    assert r.with_settings({"seed": 7}).measured is None


def test_a_models_plain_recipe_and_defaults():
    assert R.default_for("ease").settings == {} and R.default_for("ease").model == "ease"
    assert R.default_for("sasrec-ce") == R.resolve("sasrec-ce")


def test_toml_writer_reads_back():
    doc = {
        "recipe": {"name": 'a "q" \\ b', "text": 'two\nlines """ here', "n": 1, "x": 1e-05},
        "settings": {},
        "stages": {"cold_gate": {}, "id_blend": {"grid": [0, 0.5, 16]}},
        "benchmark": {"settings": {"ease": {"l2": 50.0}}, "k": [10]},
    }
    assert tomllib.loads(R.dumps(doc)) == doc


def test_a_model_without_a_stored_recipe_says_so():
    with pytest.raises(R.RecipeError, match="models/x: this model carries no recipe"):
        R.stored({"train_log": []}, "models/x")
    stored = R.stored({"recipe": R.resolve("coldstart").to_dict()}, "models/y")
    assert stored.stages == {"cold_gate": {"holdout": 0.05, "min_warm": 0.95}}


def test_train_without_a_recipe_takes_the_one_that_fits_the_data():
    """`train sasrec-ce` with no --recipe: MovieLens-1M's shape (long histories, a million
    interactions) takes ml1m-sasrec-ce; MovieLens-100K and Amazon 5-core keep the defaults."""
    ml1m = R.DataShape(interactions=1_000_209, users=6_040)
    assert R.default_for("sasrec-ce", ml1m).name == "ml1m-sasrec-ce"
    for small in (R.DataShape(100_000, 943), R.DataShape(198_502, 22_363)):
        assert R.default_for("sasrec-ce", small) == R.resolve("sasrec-ce")
    sparse = R.DataShape(2_000_000, 200_000)  # many interactions, 10 a user
    assert R.default_for("sasrec-ce", sparse).name == "sasrec-ce"
    assert R.default_for("semantic-id", ml1m).name == "semantic-id"  # none fits: its own
    assert R.default_for("ease", ml1m) == R.Recipe.plain("ease")
    assert R.default_for("sasrec-ce") == R.resolve("sasrec-ce")  # shape unknown


def test_fits_round_trips_and_is_checked(tmp_path):
    text = BASE.replace(
        'description = "a test recipe"',
        'description = "a test recipe"\n\n[recipe.fits]\nmin_interactions = 10\nmin_mean_history = 3',
    )
    r = R.resolve(write(tmp_path, text))
    assert r.fits == R.Fits(min_interactions=10, min_mean_history=3.0)
    assert R.Recipe.from_dict(tomllib.loads(r.to_toml()), "again").fits == r.fits
    assert r.fits.matches(R.DataShape(30, 10)) and not r.fits.matches(R.DataShape(30, 11))
    assert not r.fits.matches(R.DataShape(9, 1))
    for old, bad, key in (
        ("min_interactions = 10", "min_interactons = 10", "min_interactions"),
        ("min_mean_history = 3", 'min_mean_history = "3"', "min_mean_history"),
        ("min_interactions = 10", "min_interactions = -1", "≥ 0"),
    ):
        p = write(tmp_path, text.replace(old, bad), "bad.toml")
        with pytest.raises(R.RecipeError, match=re.escape(key)):
            R.resolve(p)
