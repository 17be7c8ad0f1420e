"""Deploys that cannot break serving: every tampered artefact is refused by the canary
(serve/canary.py) on each way a version reaches users (publish, reload, the registry
watcher), with its reason, counted in /metrics, while the old version keeps serving real
lists; and a version whose lists lost their quality is refused on NDCG@10."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from directrec.cli import app
from directrec.data.dataset import Dataset
from directrec.models import create
from directrec.serve import registry
from directrec.serve.canary import Refused, check_version
from tests.serve.conftest import TOKEN, Server

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _weights(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def tamper(d: Path) -> None:
        state = load_file(str(d / "weights.safetensors"))
        state["model.weights"] = np.ascontiguousarray(fn(state["model.weights"]))
        save_file(state, str(d / "weights.safetensors"))

    return tamper


def _config(**changes: object) -> Callable[[Path], None]:
    def tamper(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        config["config"].update(changes)
        (d / "config.json").write_text(json.dumps(config))

    return tamper


def _ids(fn: Callable[[list], None]) -> Callable[[Path], None]:
    def tamper(d: Path) -> None:
        ids = json.loads((d / "ids.json").read_text())
        fn(ids["item_ids"])
        (d / "ids.json").write_text(json.dumps(ids))

    return tamper


def _duplicate(ids: list) -> None:
    ids[1] = ids[0]


def _nest(ids: list) -> None:
    ids[50] = [ids[50]]


# name: (base model, tampering, the reason the canary gives)
TAMPERINGS = {
    "ease-weights-10x10": ("ease", _weights(lambda w: w[:10, :10]), "load"),
    "ease-weights-int8": ("ease", _weights(lambda w: w.astype(np.int8)), "load"),
    "sasrec-heads-3": ("sasrec", _config(heads=3), "load"),
    "sasrec-loss-unknown": ("sasrec", _config(loss="nonsense"), "load"),
    "ease-weights-nan": ("ease", _weights(lambda w: np.full_like(w, np.nan)), "scores"),
    "ease-weights-n-by-5": ("ease", _weights(lambda w: w[:, :5]), "load"),
    "duplicate-ids": ("ease", _ids(_duplicate), "ids"),
    "nested-ids": ("ease", _ids(_nest), "ids"),
}


@pytest.fixture(scope="module")
def models(world, tmp_path_factory) -> dict[str, Path]:
    """Sound model directories (the served SASRec, an EASE fit on the store), and a
    tampered copy for each case."""
    db, reg = world
    d = tmp_path_factory.mktemp("canary")
    ds = Dataset.from_store(db)
    ease = create("ease").fit(ds.interactions)
    ease.meta.update(user_ids=ds.users.ids.tolist(), item_ids=ds.items.ids.tolist())
    out = {"ease": ease.save(d / "ease"), "sasrec": reg.parent / "model-0"}
    for name, (base, tamper, _) in TAMPERINGS.items():
        shutil.copytree(out[base], d / name)
        tamper(d / name)
        out[name] = d / name
    return out


@pytest.fixture(scope="module")
def live(world, tmp_path_factory):
    """A server on a private copy of the store and registry (its versions change here)."""
    db, reg = world
    d = tmp_path_factory.mktemp("live")
    shutil.copy(db, d / "store.duckdb")
    shutil.copytree(reg, d / "registry")
    s = Server(d / "registry", d / "store.duckdb")
    yield s, d / "registry", d / "store.duckdb"
    s.stop()


def plant(reg: Path, model_dir: Path, canary: dict | None = None) -> str:
    """Put a model into the registry as its next version with a valid manifest, without
    `publish`'s canary: an artefact published by an older release, or altered and its
    manifest rewritten. Only the serving side's own canary stands between it and users."""
    name = f"v{int(registry.versions(reg)[-1][1:]) + 1:04d}"
    shutil.copytree(model_dir, reg / name)
    files = {f.name: registry.sha256(f) for f in (reg / name).iterdir() if f.is_file()}
    manifest = {"model": "x", "files": files} | ({"canary": canary} if canary else {})
    (reg / name / registry.MANIFEST).write_text(json.dumps(manifest))
    return name


def refused(s: Server, reason: str) -> float:
    text = s.client.get("/metrics").text
    m = re.search(rf'^directrec_version_refused_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def assert_still_serving(s: Server, version: str) -> None:
    r = s.client.get("/v1/users/u5/recommendations", params={"k": 10})
    assert r.status_code == 200 and r.headers["X-Model-Version"] == version, r.text
    ids = [it["item_id"] for it in r.json()["items"]]
    assert len(ids) == len(set(ids)) == 10 and all(re.fullmatch(r"i\d+", i) for i in ids), ids
    assert s.client.get("/readyz").json()["model_version"] == version


@pytest.mark.parametrize("path", ["publish", "reload", "watcher"])
@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_tampered_version_is_refused(tampering, path, models, live, world, tmp_path):
    reason = TAMPERINGS[tampering][2]
    if path == "publish":
        db, reg = world
        reg = Path(shutil.copytree(reg, tmp_path / "registry"))
        before = sorted(p.name for p in reg.iterdir()), registry.current(reg)
        with pytest.raises(Refused) as e:
            registry.publish(models[tampering], reg, db=db)
        assert e.value.reason == reason, e.value
        assert (sorted(p.name for p in reg.iterdir()), registry.current(reg)) == before
        return
    s, reg, _ = live
    serving = s.client.get("/readyz").json()["model_version"]
    count = refused(s, reason)
    bad = plant(reg, models[tampering])
    if path == "reload":
        r = s.client.post("/v1/admin/reload", json={"version": bad}, headers=ADMIN)
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["reason"] == reason and err["model_version"] == serving, err
        assert str(reg.parent) not in r.text and "/tmp" not in r.text, r.text  # no paths
    else:
        registry.set_current(reg, bad)  # a new CURRENT: the watcher tries it once
        deadline = time.time() + 60
        while refused(s, reason) == count and time.time() < deadline:
            time.sleep(0.2)
    assert refused(s, reason) == count + 1
    assert_still_serving(s, serving)


def test_cli_publish_refuses_with_exit_2_and_records_the_canary(models, world, tmp_path):
    db, reg = world
    reg = Path(shutil.copytree(reg, tmp_path / "registry"))
    before = registry.versions(reg), registry.current(reg)
    res = CliRunner().invoke(
        app, ["publish", "--model", str(models["nested-ids"]), "--registry", str(reg)]
    )
    assert res.exit_code == 2 and "refused by the canary (ids)" in res.output, res.output
    assert (registry.versions(reg), registry.current(reg)) == before
    res = CliRunner().invoke(
        app, ["publish", "--model", str(models["ease"]), "--registry", str(reg), "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    recorded = json.loads((reg / registry.current(reg) / registry.MANIFEST).read_text())
    assert recorded["canary"]["users"] > 50 and recorded["canary"]["ndcg@10"] > 0.1


def test_a_version_whose_lists_lost_their_quality_is_refused(models, live):
    """Shuffled ids: the right shapes, finite scores, full lists, but the wrong items. Only
    the NDCG@10 rule (against the figure recorded at publish) can tell."""
    s, reg, db = live
    serving = s.client.get("/readyz").json()["model_version"]
    good = registry.publish(models["ease"], reg, make_current=False, db=db)
    recorded = json.loads((reg / good / registry.MANIFEST).read_text())["canary"]
    shuffled = reg.parent / "shuffled"
    shutil.copytree(models["ease"], shuffled)
    ids = json.loads((shuffled / "ids.json").read_text())
    ids["item_ids"] = list(np.random.default_rng(0).permutation(ids["item_ids"]))
    (shuffled / "ids.json").write_text(json.dumps(ids))
    bad = plant(reg, shuffled, canary=recorded)
    count = refused(s, "ndcg")
    r = s.client.post("/v1/admin/reload", json={"version": bad}, headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"]["reason"] == "ndcg", r.text
    assert "recorded at publish" in r.json()["error"]["message"]
    assert refused(s, "ndcg") == count + 1
    assert_still_serving(s, serving)
    r = s.client.post("/v1/admin/reload", json={"version": good}, headers=ADMIN)
    assert r.status_code == 200, r.text  # the sound version passes against its own figure
    assert_still_serving(s, good)


def test_a_run_setting_in_a_config_is_not_applied(models, tmp_path):
    """device="meta" in config.json (a run setting, which artefacts no longer carry) is
    ignored on load: the version passes the canary and serves on this machine's device."""
    from directrec.generate.stages import load_pipeline

    bad = Path(shutil.copytree(models["sasrec"], tmp_path / "device-meta"))
    _config(device="meta")(bad)
    model, _ = load_pipeline(bad)
    assert model.device.type == "cpu"
    ctx, report = check_version(bad, None)
    assert report.lists > 0 and ctx.model.device.type == "cpu"
