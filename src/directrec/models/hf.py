"""Hugging Face language models for the LM backend (models/llm.py): a checkpoint loaded
from disk (or the hub when online), or a tiny GPT-2 built from a config for tests and CPU
experiments. Nothing here is pickled: weights come as safetensors, tokenizers as JSON."""

from __future__ import annotations

from pathlib import Path

import torch


def load_base(
    name: str, tokenizer_cls: type, model_cls: type, dtype: torch.dtype | str = "auto"
) -> tuple:
    """A checkpoint from a local directory, or by hub id: fetched when online, from the
    local cache when offline (HF_HUB_OFFLINE=1, as the tests and the demo run). `dtype`:
    the weights' float type ("auto" = the checkpoint's own)."""
    local = Path(name).expanduser().is_dir()
    where = str(Path(name).expanduser()) if local else name
    try:
        tok = tokenizer_cls.from_pretrained(where, local_files_only=local)
        lm = model_cls.from_pretrained(where, local_files_only=local, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"base_model {name!r} is neither a model directory nor a hub id that could be "
            f"fetched or found in the local cache: {e}"
        ) from e
    return tok, lm


def tiny_lm(
    texts: list[str],
    dim: int,
    layers: int,
    heads: int,
    dropout: float,
    seed: int,
    tok_json: str | None = None,
) -> tuple:
    """A small GPT-2 (random weights) with a word-level tokenizer over the words of
    `texts` (the prompt's words and the titles), or the saved tokenizer `tok_json`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    if tok_json is None:
        words = {"[PAD]": 0, "[EOS]": 1, "[UNK]": 2}
        pre = pre_tokenizers.Whitespace()
        for text in texts:
            for w, _ in pre.pre_tokenize_str(text):
                words.setdefault(w, len(words))
        tk = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
        tk.pre_tokenizer = pre
    else:
        tk = Tokenizer.from_str(tok_json)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]"
    )
    cfg = GPT2Config(
        vocab_size=tk.get_vocab_size(),
        n_positions=512,
        n_embd=dim,
        n_layer=layers,
        n_head=heads,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return tok, GPT2LMHeadModel(cfg)
