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


def test_beam_search_in_user_chunks_writes_the_same_lists(lora_model, monkeypatch):
    """Generation runs a bounded number of users per beam-search call (its kept step scores
    grow with users × beams × vocabulary × steps); the lists do not depend on the chunking."""
    import directrec.models.llm as llm

    m = lora_model
    rng = np.random.default_rng(1)
    hists = [rng.choice(m.n_items, size=n, replace=False) for n in (1, 2, 3, 5, 8)]
    whole, whole_scores = m.generate_for(hists, beam=8)
    calls = []
    search = m._beam_search
    monkeypatch.setattr(m, "_beam_search", lambda h, *a: calls.append(len(h)) or search(h, *a))
    monkeypatch.setattr(llm, "SCORES_PER_CALL", 1)  # one user a call
    items, scores = m.generate_for(hists, beam=8)
    assert calls == [1] * len(hists)
    assert np.array_equal(items, whole)
    np.testing.assert_allclose(scores, whole_scores, rtol=1e-4, atol=1e-4)


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

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:  # the same items and scores (to
        # float noise: one row alone and two together take different matmul paths)
        fa, fb = torch.isfinite(a), torch.isfinite(b)
        return torch.equal(fa, fb) and torch.allclose(a[fa], b[fb], atol=1e-4)

    assert same(plain[0], asked[0]) and not same(plain[1], asked[1])
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
    with pytest.raises(ValueError, match="dtype must be one of auto, float32"):
        create("llm", settings | {"dtype": "float64"})  # refused when built, not at fit


def test_the_loss_reads_title_logits_only_and_equals_the_full_causal_lm_loss(lora_model, fit_data):
    """Left-padded rows let the LM head run over the title positions alone; the loss is
    still the Hugging Face causal-LM loss over the same right-padded rows."""
    m = lora_model
    pairs = m._pairs(fit_data, 0)[:16]
    rows = m._batch(pairs)
    logits, target = m._title_logits(m.lm, *rows)
    longest = max(len(m.title_tokens[t]) for _, t in pairs)
    assert logits.shape[:2] == target.shape == (16, longest) < rows[0].shape
    seqs = [m._encode(m.prompt(h)) + m.title_tokens[t] for h, t in pairs]
    labels = [
        [-100] * (len(s) - len(m.title_tokens[t])) + m.title_tokens[t]
        for s, (_, t) in zip(seqs, pairs, strict=True)
    ]
    n, pad = max(map(len, seqs)), m.tok.pad_token_id
    ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs])
    att = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
    lab = torch.tensor([x + [-100] * (n - len(x)) for x in labels])
    with torch.no_grad():
        full = m.lm(input_ids=ids, attention_mask=att, labels=lab).loss
        ours = m._loss(m.lm, rows)
    assert torch.allclose(ours, full, atol=1e-5)


def test_activation_checkpointing_trains_to_the_same_adapters(fit_data, planted):
    """`checkpointing` recomputes activations in the backward pass: the same step, the
    same adapters (to float noise), and the flag reaches the model."""
    settings = {"lora_r": 4, "epochs": 1, "samples_per_user": 1, "batch_size": 32, "lr": 1e-2}
    plain = create("llm", settings).fit(fit_data, planted.catalog)
    saved = create("llm", settings | {"checkpointing": True}).fit(fit_data, planted.catalog)
    assert saved.lm.get_base_model().is_activation_checkpointing
    assert not plain.lm.get_base_model().is_activation_checkpointing
    a = {k: v for k, v in plain.lm.named_parameters() if v.requires_grad}
    b = {k: v for k, v in saved.lm.named_parameters() if v.requires_grad}
    moved = [k for k in a if "lora_B" in k and a[k].abs().max() > 0]
    assert moved and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
