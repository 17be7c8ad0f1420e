"""docs/llm.md's 0.5B recipe run end to end at full size, without the pretrained weights (this
workplace cannot fetch them): a random checkpoint with Qwen2.5-0.5B's published architecture
(24 layers, width 896, 14 query / 2 key-value heads, 151,936-token tied embedding, stored
in bfloat16 as Qwen ships it) and a byte-level BPE tokenizer trained here on the titles.
It measures what the recipe costs, not what it is worth: load time and float type, LoRA's
trainable share, seconds and peak memory of training steps at the recipe's batch, prompt
length in tokens, constrained beam search per user, and the adapters-only save/load round
trip. Quality needs the real checkpoint (and a GPU).

    python bench/llm_full_size.py --db out/bench/ml100k.duckdb --checkpointing
    python bench/llm_full_size.py --db out/bench/ml100k.duckdb --batch-size 8 --tag b8

The checkpoint is written once under --checkpoint (about 1 GB) and reused.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from directrec.data.dataset import Dataset, Interactions
from directrec.data.split import leave_one_out
from directrec.models import create, load_model
from directrec.models.llm import PROMPT, SEP, item_texts

# Qwen/Qwen2.5-0.5B's config.json (architecture fields only).
QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}
# docs/llm.md's GPU recipe; only the device differs here.
RECIPE = {
    "lora_r": 16,
    "lora_alpha": 32,
    "batch_size": 32,
    "lr": 2e-4,
    "prompt_items": 20,
    "samples_per_user": 8,
    "beam": 20,
}


def peak_gib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def build_checkpoint(where: Path, texts: list[str], seed: int) -> None:
    """A random Qwen2.5-0.5B-shaped checkpoint and a BPE tokenizer over the titles."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    prompt = PROMPT.format(history=SEP.join(texts[:3]), request="Request: something. ")
    bpe.train_from_iterator([prompt, *(" " + t for t in texts)], trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    eos = tok.eos_token_id
    torch.manual_seed(seed)
    cfg = Qwen2Config(**QWEN25_05B, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(dir=where.parent, prefix=where.name + "."))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(where)  # whole or absent: a run cut short leaves no half checkpoint behind


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, default=Path("out/llm-qwen2.5-0.5b-shape"))
    p.add_argument("--steps", type=int, default=2, help="training steps at the recipe's batch")
    p.add_argument("--users", type=int, default=3, help="test users to decode for")
    p.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tag", default="", help="suffix of the output file name")
    p.add_argument("--out", type=Path, default=Path("docs/results/llm"))
    args = p.parse_args()
    ds = Dataset.from_store(args.db)
    fit, hist, test = leave_one_out(ds.interactions).stage("test")
    if not args.checkpoint.exists():
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        build_checkpoint(
            args.checkpoint, item_texts(ds.catalog, ds.interactions.n_items), args.seed
        )
        print(f"built {args.checkpoint} in {time.perf_counter() - t:.0f} s", flush=True)
    settings = RECIPE | {
        "batch_size": args.batch_size,
        "checkpointing": args.checkpointing,
        "base_model": str(args.checkpoint),
        "device": "cpu",
        "epochs": 0,
    }
    t = time.perf_counter()
    model = create("llm", settings).fit(fit, ds.catalog)  # load + LoRA, no epoch yet
    load_s = time.perf_counter() - t
    base = model.lm.get_base_model()
    n_params = sum(p.numel() for n, p in model.lm.named_parameters() if "lora_" not in n)
    trainable = sum(p.numel() for p in model.lm.parameters() if p.requires_grad)
    after_load = peak_gib()
    print(f"loaded in {load_s:.0f} s ({base.dtype}), peak {after_load} GiB", flush=True)

    # Training: the recipe's optimizer over exactly `steps` full batches of pairs.
    rng = np.random.default_rng(args.seed)
    per_step = -(-args.batch_size // RECIPE["samples_per_user"])
    full = np.flatnonzero(fit.history_lengths() > RECIPE["prompt_items"])  # full prompts
    users = rng.choice(full, per_step * args.steps, replace=False)
    keep = np.isin(fit.user, users)
    sub = Interactions(fit.user[keep], fit.item[keep], fit.n_users, fit.n_items)
    pairs = model._pairs(sub, 0)
    tokens = [len(model._encode(model.prompt(h))) + len(model.title_tokens[t]) for h, t in pairs]
    params = [q for q in model.lm.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=RECIPE["lr"], weight_decay=model.config.weight_decay)
    before = [q.detach().clone() for q in params]
    t = time.perf_counter()
    loss = model._epoch(sub, opt, 0)
    train_s = time.perf_counter() - t
    steps = -(-len(pairs) // args.batch_size)  # the batches `_epoch` ran
    moved = sum(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
    after_train = peak_gib()
    print(f"{steps} steps in {train_s:.0f} s, loss {loss:.3f}, peak {after_train} GiB")

    # Constrained generation (the recipe's beam) for a few test users, then save/load.
    pick = rng.choice(len(test), args.users, replace=False)
    rows = test.users[pick]
    ptr = hist.indptr
    hists = [hist.item[ptr[u] : ptr[u + 1]] for u in rows]
    t = time.perf_counter()
    items, _ = model.generate_for(hists, RECIPE["beam"])
    gen_s = time.perf_counter() - t
    real = bool(
        all(
            (r >= 0).all() and len(set(r)) == len(r) and not set(r) & set(h.tolist())
            for r, h in zip(items, hists, strict=True)
        )
    )
    after_gen = peak_gib()
    with tempfile.TemporaryDirectory() as d:
        path = model.save(Path(d) / "model")
        saved = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        again = load_model(path).generate_for(hists[:1], RECIPE["beam"])[0]
    out = {
        "command": " ".join(["python", *sys.argv]),
        "db": str(args.db),
        "seed": args.seed,
        "split": "leave-one-out (test stage); pairs from the training part",
        "checkpoint": "random weights, Qwen2.5-0.5B architecture, saved in bfloat16; "
        "byte-level BPE tokenizer (8,000 tokens) trained on the titles",
        "architecture": QWEN25_05B,
        "settings": settings,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "dtype_loaded": str(base.dtype),
        "parameters": n_params,
        "trainable_parameters": trainable,
        "load_seconds": round(load_s, 1),
        "train_steps": steps,
        "train_pairs": len(pairs),
        "tokens_per_pair": {"mean": round(float(np.mean(tokens)), 1), "max": int(max(tokens))},
        "seconds_per_step": round(train_s / steps, 1),
        "adapter_tensors_updated": f"{moved} of {len(params)}",
        "train_loss": round(loss, 3),
        "generation_users": args.users,
        "generation_seconds_per_user": round(gen_s / args.users, 1),
        "generated_lists_real_unseen_distinct": real,
        "saved_bytes": saved,
        "round_trip_same_list": bool(np.array_equal(again, items[:1])),
        "peak_rss_gib": {
            "after_load": after_load,
            "after_train": after_train,
            "after_generate": after_gen,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"full-size-cpu{'-' + args.tag if args.tag else ''}.json"
    (args.out / name).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
