"""The language-model backend on a tiny GPT-2 built locally: constrained decoding only
writes real unseen items, deterministically; LoRA training lowers the loss; adapters
survive save/load; re-ranking agrees with generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.generate.pipeline import ListOptions, recommend
from directrec.models import create, load_model
from directrec.models.llm import TitleTrie


@pytest.fixture(scope="module")
def fit_data(planted):
    return leave_one_out(planted.interactions).stage("test")[0]


@pytest.fixture(scope="module")
def lora_model(fit_data, planted):
    settings = {
        "lora": True,
        "lora_r": 4,
        "epochs": 0,
        "samples_per_user": 2,
        "batch_size": 32,
        "lr": 1e-2,
        "beam": 8,
        "prompt_items": 5,
    }
    return create("llm", settings).fit(fit_data, planted.catalog)


def test_constrained_beams_are_real_unseen_distinct_and_deterministic(lora_model, fit_data):
    m = lora_model
    m.lm.generation_config.do_sample = True  # a checkpoint's config must not switch sampling on
    m.lm.generation_config.temperature = 5.0
    rng = np.random.default_rng(0)
    hists = [rng.choice(m.n_items, size=n, replace=False) for n in (0, 3, 10, m.n_items - 4)]
    items, scores = m.generate_for(hists, beam=8)
    again, _ = m.generate_for(hists, beam=8)
    assert np.array_equal(items, again)
    for h, row, sc in zip(hists, items, scores, strict=True):
        got = row[row >= 0]
        assert len(got) == min(8, m.n_items - len(h)) == len(set(got))
        assert not set(got) & set(h) and ((got >= 0) & (got < m.n_items)).all()
        assert np.all(np.diff(sc[: len(got)]) <= 1e-6)


def test_trie_only_allows_continuations_towards_unseen_items():
    trie = TitleTrie([[5, 6, 1], [5, 7, 1], [8, 1]])
    assert sorted(trie.allowed([], set())) == [5, 8]
    assert trie.allowed([5], {0}) == [7] and trie.allowed([], {0, 1}) == [8]
    assert trie.leaf_item[trie.walk([5, 7, 1])] == 1 and trie.allowed([9], set()) == []
    with pytest.raises(ValueError, match="same title"):
        TitleTrie([[3, 1], [3, 1]])


def test_lora_training_lowers_the_loss_and_only_adapters_train(fit_data, planted):
    settings = {
        "lora": True,
        "lora_r": 8,
        "epochs": 0,
        "samples_per_user": 2,
        "batch_size": 32,
        "lr": 1e-2,
        "prompt_items": 5,
    }
    m = create("llm", settings).fit(fit_data, planted.catalog)
    before = m.loss_on(fit_data, epoch=99)
    trainable = {n for n, p in m.lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)

    opt = torch.optim.AdamW([p for p in m.lm.parameters() if p.requires_grad], lr=1e-2)
    for e in range(3):
        m._epoch(fit_data, opt, e)
    assert m.loss_on(fit_data, epoch=99) < 0.95 * before


def test_adapters_round_trip(lora_model, tmp_path):
    path = lora_model.save(tmp_path / "llm")
    keys = load_file(str(path / "weights.safetensors")).keys()
    assert any(k.startswith("model.lora.") for k in keys)
    loaded = load_model(path)
    h = Histories.from_lists([[0, 1, 2], [5, 6]], lora_model.n_items)
    a, b = recommend(lora_model, h, ListOptions(k=5)), recommend(loaded, h, ListOptions(k=5))
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.items, y.items)
        np.testing.assert_allclose(x.scores, y.scores, rtol=1e-4, atol=1e-4)


def test_rerank_scores_equal_the_generated_title_log_probabilities(lora_model):
    m = lora_model
    hist = np.array([3, 9, 14, 20])
    items, scores = m.generate_for([hist], beam=5)
    ranked = m.rerank(hist, items[0])
    np.testing.assert_allclose(ranked, scores[0], rtol=1e-3, atol=1e-3)
    request = m.generate_for([hist], beam=5, request="something romantic")[0]
    assert (request >= 0).all()


def _tiny_checkpoint(kind: str, texts: list[str], where, dtype: torch.dtype = torch.float32) -> str:
    """A random tiny Llama- or Qwen2-style checkpoint with a byte-level BPE tokenizer trained
    here on the catalogue's titles, saved in `dtype` as a Hugging Face directory (nothing
    downloaded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [*texts, "History: none. Request: something romantic. Next:", " ; "]
    bpe.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>")
    common = {
        "vocab_size": bpe.get_vocab_size(),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.eos_token_id,
    }
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    path = where / f"{kind}-{str(dtype).split('.')[-1]}"
    model.to(dtype).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_llama_and_qwen2_checkpoints_run_the_whole_path(kind, fit_data, planted, tmp_path):
    """LoRA training, trie-constrained decoding, a request in the prompt, save/load and
    rerank on a local Llama-/Qwen2-style checkpoint with a BPE tokenizer."""
    base = _tiny_checkpoint(kind, list(planted.catalog.titles), tmp_path)
    settings = {
        "base_model": base,
        "lora_r": 4,
        "epochs": 1,
        "samples_per_user": 1,
        "batch_size": 32,
        "lr": 1e-2,
        "beam": 6,
        "prompt_items": 4,
    }
    m = create("llm", settings).fit(fit_data, planted.catalog)
    assert m.meta["train_log"] and type(m.lm.get_base_model()).__name__.lower().startswith(kind)
    hist = fit_data.item[fit_data.user == 2][:6]
    items, scores = m.generate_for([hist], beam=6)
    got = items[0][items[0] >= 0]
    assert len(got) == 6 == len(set(got)) and not set(got) & set(hist)
    np.testing.assert_allclose(m.rerank(hist, items[0]), scores[0], rtol=1e-3, atol=1e-3)
    # A request reaches the prompt: the same history with a request decodes differently.
    h = Histories.from_lists([hist, hist], m.n_items)
    plain = m.score(h, k=6)
    asked = m.score(h, k=6, requests=["", "something romantic"])
    assert torch.equal(plain[0], asked[0]) and not torch.equal(plain[1], asked[1])
    empty = Histories.from_lists([[]], m.n_items)
    assert m.fallback(empty).all() and not m.fallback(empty, ["something romantic"]).any()
    loaded = load_model(m.save(tmp_path / f"{kind}-model"))
    assert loaded.config.base_model == base
    a = recommend(m, h, ListOptions(k=5))
    b = recommend(loaded, h, ListOptions(k=5))
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.items, y.items)


def test_a_base_model_that_is_neither_a_directory_nor_cached_is_a_clear_error(fit_data, planted):
    with pytest.raises(ValueError, match="neither a model directory nor a hub id"):
        create("llm", {"base_model": "no-such-org/no-such-model-xyz"}).fit(
            fit_data, planted.catalog
        )


def test_regularisation_settings_reach_the_model_and_optimiser(fit_data, planted):
    """`tiny_dropout` sets the built-in GPT-2's dropouts, and `weight_decay` the AdamW
    decay: one epoch with decay shrinks the weights more than one without."""
    base = {"lora": False, "epochs": 1, "samples_per_user": 1, "batch_size": 32, "lr": 1e-2}
    m = create("llm", base | {"tiny_dropout": 0.3, "weight_decay": 0.0}).fit(
        fit_data, planted.catalog
    )
    cfg = m.lm.config
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.3
    d = create("llm", base | {"tiny_dropout": 0.3, "weight_decay": 50.0}).fit(
        fit_data, planted.catalog
    )
    norm = lambda x: sum(float(p.norm()) for p in x.lm.parameters())  # noqa: E731
    assert norm(d) < norm(m)


def test_a_bfloat16_checkpoint_computes_in_float32_on_a_cpu_unless_asked(
    fit_data, planted, tmp_path
):
    """`dtype=auto` loads a bfloat16 checkpoint (as Qwen2.5 ships) in float32 on a CPU, where
    bfloat16 matmuls are very slow; an explicit dtype is kept; other names are refused."""
    base = _tiny_checkpoint("qwen2", list(planted.catalog.titles), tmp_path, torch.bfloat16)
    settings = {"base_model": base, "lora_r": 4, "epochs": 0, "beam": 4, "device": "cpu"}
    auto = create("llm", settings).fit(fit_data, planted.catalog)
    assert auto.lm.get_base_model().dtype == torch.float32
    kept = create("llm", settings | {"dtype": "bfloat16"}).fit(fit_data, planted.catalog)
    assert kept.lm.get_base_model().dtype == torch.bfloat16
    hist = fit_data.item[fit_data.user == 2][:6]
    got = kept.generate_for([hist], beam=4)[0][0]
    assert (got >= 0).all() and not set(got) & set(hist)  # it still decodes real items
    loaded = load_model(kept.save(tmp_path / "bf16-model"))
    assert loaded.lm.get_base_model().dtype == torch.bfloat16
    assert np.array_equal(loaded.generate_for([hist], beam=4)[0][0], got)
    tiny = create("llm", {"lora": False, "epochs": 0, "dtype": "bfloat16", "beam": 4})
    tiny = tiny.fit(fit_data, planted.catalog)
    again = load_model(tiny.save(tmp_path / "tiny-bf16"))
    assert again.lm.dtype == torch.bfloat16
    assert np.array_equal(again.generate_for([hist], 4)[0], tiny.generate_for([hist], 4)[0])
    with pytest.raises(ValueError, match="dtype must be auto, float32"):
        create("llm", settings | {"dtype": "float64"}).fit(fit_data, planted.catalog)
