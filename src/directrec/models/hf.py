"""Hugging Face language models for the LM backend (models/llm.py): a checkpoint loaded
from disk (or the hub when online), or a tiny GPT-2 built from a config for tests and CPU
experiments. Nothing here is pickled: weights come as safetensors, tokenizers as JSON."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from directrec.models.settings import Checks, NetworkConfig, setting

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclasses.dataclass
class LMConfig(NetworkConfig):
    """Which language model, or the shape of the tiny built-in one, and its adapters."""

    base_model: str = setting("", 'HF causal-LM directory or hub id; "" = the tiny built-in GPT-2')
    tiny_dim: int = setting(64, "built-in model: hidden width")
    tiny_layers: int = setting(2, "built-in model: Transformer blocks")
    tiny_heads: int = setting(2, "built-in model: attention heads")
    tiny_dropout: float = setting(0.1, "built-in model: residual, embedding and attention dropout")
    lora: bool = setting(True, "train LoRA adapters (else all weights)")
    lora_r: int = setting(8, "LoRA rank")
    lora_alpha: int = setting(16, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = setting(0.05, "dropout on the LoRA path")
    lora_targets: str = setting(
        "all-linear", 'modules that get adapters ("all-linear" or comma-separated names)'
    )
    # weights' float type: auto = float32 on a CPU (bfloat16 is ~70x slower there without
    # AVX-512), the checkpoint's own on CUDA | float32 | bfloat16 | float16
    dtype: str = setting("auto", "weights' float type: auto | float32 | bfloat16 | float16")

    def checks(self) -> Checks:
        return {
            "tiny_dim": (self.tiny_dim >= 1, ">= 1"),
            "tiny_layers": (self.tiny_layers >= 1, ">= 1"),
            "tiny_heads": (self.tiny_heads >= 1, ">= 1"),
            "tiny_dropout": (0 <= self.tiny_dropout < 1, "in [0, 1)"),
            "lora_r": (self.lora_r >= 1, ">= 1"),
            "lora_alpha": (self.lora_alpha >= 1, ">= 1"),
            "lora_dropout": (0 <= self.lora_dropout < 1, "in [0, 1)"),
            "dtype": (self.dtype in DTYPES, f"one of {', '.join(DTYPES)}"),
        }


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
