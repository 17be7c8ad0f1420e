"""Any device: torch models train and score on CUDA when asked, and their artefacts load
on the CPU with the same scores. Skipped without CUDA (CI has none); run on a GPU machine
with `pytest tests/models/test_device.py`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.models import MODELS, create, load_model
from directrec.models.settings import RUN_FIELDS, RunSettings
from directrec.models.transformer import resolve_device
from tests.models.settings import TEST_SETTINGS

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def data(planted):
    """The planted data with synthetic item vectors (cluster one-hot + noise), so these
    tests need no text encoder (GPU machines may not have its weights)."""
    n = planted.interactions.n_items
    rng = np.random.default_rng(0)
    vec = np.eye(8)[np.arange(n) // 20 % 8] + 0.1 * rng.standard_normal((n, 8))
    vec = np.hstack([vec, 0.1 * rng.standard_normal((n, 24))]).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return dataclasses.replace(
        planted, catalog=dataclasses.replace(planted.catalog, embeddings=vec)
    )


def test_auto_is_cpu_without_cuda_and_cuda_is_refused_there():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


SCORED = ["sasrec-ce", "sasrec", "multvae", "cfgan", "semantic-id"]


@pytest.mark.parametrize("name", SCORED)
def test_run_settings_stay_out_of_the_artefact(name, data, tmp_path):
    """Where and how a model was trained (device, threads, progress) is not saved: the
    artefact holds no run setting, loads with the default run settings, and on the CPU
    scores exactly as the model it was saved from."""
    fit = leave_one_out(data.interactions).stage("test")[0]
    run = {"device": "cpu", "threads": 1, "progress": True}
    model = create(name, {**TEST_SETTINGS[name], "epochs": 2, **run}).fit(fit, data.catalog)
    assert (model.run.device, model.run.threads) == ("cpu", 1)
    path = model.save(tmp_path / name)
    saved = json.loads((path / "config.json").read_text())["config"]
    assert not RUN_FIELDS & set(saved), sorted(RUN_FIELDS & set(saved))
    loaded = load_model(path)
    assert loaded.run == RunSettings() and loaded.config == model.config
    loaded.run.device = "cpu"  # a GPU machine's default would be CUDA
    loaded._load_state(loaded._state())  # ...so place its weights on the CPU too
    h = Histories.from_interactions(fit, np.arange(1, 30))
    a, b = loaded.score(h).numpy(), model.score(h).numpy()
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    np.testing.assert_array_equal(a[np.isfinite(a)], b[np.isfinite(b)])


@cuda
@pytest.mark.parametrize("name", SCORED)
def test_trained_on_cuda_loads_on_cpu_with_the_same_scores(name, data, tmp_path):
    """Trained with run device "cuda", saved, loaded with run device "cpu": the weights
    are the GPU model's exactly, its CPU scores match the GPU model's scores (beams: the
    written lists mostly), and the saved model on the CPU scores as the loaded one."""
    fit = leave_one_out(data.interactions).stage("test")[0]
    model = create(name, {**TEST_SETTINGS[name], "device": "cuda"}).fit(fit, data.catalog)
    h = Histories.from_interactions(fit, np.arange(1, 50))
    on_gpu = model.score(h)
    path = model.save(tmp_path / name)
    cpu = MODELS[name].load(path, RunSettings(device="cpu"))
    assert cpu.device.type == "cpu"
    gpu_state = model._state()
    for key, value in cpu._state().items():
        np.testing.assert_array_equal(value, gpu_state[key], err_msg=key)
    on_cpu = cpu.score(h)
    # the saved-from model moved to the CPU scores exactly as the loaded one
    model.run.device = "cpu"
    model._load_state(gpu_state)
    moved = model.score(h).numpy()
    c = on_cpu.numpy()
    assert np.array_equal(np.isfinite(moved), np.isfinite(c))
    np.testing.assert_array_equal(moved[np.isfinite(c)], c[np.isfinite(c)])
    assert on_gpu.device.type == "cpu" and on_cpu.device.type == "cpu"  # scores come back
    g = on_gpu.numpy()
    if not MODELS[name].capabilities.generator:
        np.testing.assert_allclose(g, c, rtol=2e-3, atol=2e-3)
        return
    # A beam search is discrete: float differences between devices may swap near-tied
    # beams, so the written lists must agree mostly, and their shared scores closely.
    both = np.isfinite(g) & np.isfinite(c)
    overlap = both.sum(1) / np.maximum(np.isfinite(g).sum(1), 1)
    assert overlap.mean() >= 0.8, overlap
    np.testing.assert_allclose(g[both], c[both], rtol=1e-2, atol=1e-2)


@cuda
def test_sasrec_learns_on_cuda_with_bf16(data):
    split = leave_one_out(data.interactions)
    fit, seen, targets = split.stage("test")
    from directrec.evaluate.protocol import evaluate

    model = create("sasrec-ce", {**TEST_SETTINGS["sasrec-ce"], "device": "cuda", "bf16": True})
    model.fit(fit)
    hr = evaluate(model, fit, targets, (10,), seen=seen).metrics["hr@10"]
    pop = evaluate(create("pop").fit(fit), fit, targets, (10,), seen=seen).metrics["hr@10"]
    assert model.meta["device"].startswith("cuda") and hr >= max(2 * pop, pop + 0.2)


@pytest.mark.parametrize("name", ["sasrec-ce", "multvae", "cfgan", "semantic-id"])
def test_an_artefact_saying_cuda_loads_on_a_machine_without_one(name, data, tmp_path):
    """What a GPU-trained model's config.json said before run settings left it (device:
    cuda) does not stop it from loading and scoring on a CPU-only machine (here: CI)."""
    if torch.cuda.is_available():
        pytest.skip("this checks a machine without CUDA")
    fit = leave_one_out(data.interactions).stage("test")[0]
    model = create(name, {**TEST_SETTINGS[name], "epochs": 2}).fit(fit, data.catalog)
    path = model.save(tmp_path / name)
    config = json.loads((path / "config.json").read_text())
    config["config"]["device"] = "cuda:0"
    (path / "config.json").write_text(json.dumps(config))
    h = Histories.from_interactions(fit, np.arange(1, 20))
    a, b = load_model(path).score(h).numpy(), model.score(h).numpy()
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-5)
