"""CPU cost and quality of the language-model backend on the built-in GPT-2 (no checkpoint
on this machine): parameters, training throughput, constrained-generation latency, and
HR/NDCG@10 on a seeded sample of leave-one-out test users (full catalogue: the beam
searches over every title), against popularity on the same users.

    python bench/llm.py --db out/bench/ml100k.duckdb --users 300 --epochs 3
    python bench/llm.py --db out/bench/ml100k.duckdb --users 300 --epochs 100 --minutes 15 \
        --valid-users 200 --eval-every 3 --tag 15min

With --minutes the epoch loop (validation included) stops at that budget and keeps the
best epoch by NDCG@10 on a sample of validation users (each user's second-to-last item);
the test users never take part in a choice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from directrec.data.dataset import Dataset
from directrec.data.split import Targets, leave_one_out
from directrec.evaluate.protocol import evaluate
from directrec.models import create


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument(
        "--lora", action="store_true", help="LoRA on the random base (else full training)"
    )
    p.add_argument("--minutes", type=float, default=0.0, help="training budget (0 = none)")
    p.add_argument("--valid-users", type=int, default=0, help="early stopping on validation")
    p.add_argument("--eval-every", type=int, default=3)
    p.add_argument("--dropout", type=float, default=0.1, help="built-in model's dropout")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--samples-per-user", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--prompt-items", type=int, default=10)
    p.add_argument("--patience", type=int, default=2, help="validations without improvement")
    p.add_argument("--tag", default="", help="suffix of the output file name")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=Path("docs/results/llm"))
    args = p.parse_args()
    ds = Dataset.from_store(args.db)
    split = leave_one_out(ds.interactions)
    fit, hist, test = split.stage("test")
    settings = {
        "lora": args.lora,
        "epochs": args.epochs,
        "tiny_dim": args.dim,
        "tiny_layers": args.layers,
        "tiny_heads": 4,
        "samples_per_user": args.samples_per_user,
        "tiny_dropout": args.dropout,
        "weight_decay": args.weight_decay,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "patience": args.patience,
        "beam": 20,
        "prompt_items": args.prompt_items,
        "seed": args.seed,
        "max_minutes": args.minutes,
        "eval_every": args.eval_every,
    }
    model = create("llm", settings)
    t = time.perf_counter()
    if args.valid_users:  # fit on train, validate on a sample of second-to-last items
        from directrec.evaluate.protocol import fit_model

        fit_model(model, split, "test", ds.catalog, valid_users=args.valid_users)
    else:
        model.fit(fit, ds.catalog)
    fit_s = time.perf_counter() - t
    n_params = sum(p.numel() for p in model.lm.parameters())
    trainable = sum(p.numel() for p in model.lm.parameters() if p.requires_grad)
    pick = np.sort(np.random.default_rng(args.seed).choice(len(test), args.users, replace=False))
    counts = np.diff(test.indptr)[pick]
    items = np.concatenate([test.items[test.indptr[j] : test.indptr[j + 1]] for j in pick])
    sample = Targets(test.users[pick], np.concatenate([[0], np.cumsum(counts)]), items)
    t = time.perf_counter()
    res = evaluate(model, hist, sample, (10,), batch_size=16).metrics
    gen_s = time.perf_counter() - t
    pop = evaluate(create("pop").fit(fit), hist, sample, (10,)).metrics
    samples = len(model._pairs(fit, 0)) * len(model.meta.get("train_log", []))
    out = {
        "command": " ".join(["python", *sys.argv]),
        "db": str(args.db),
        "seed": args.seed,
        "model": "built-in GPT-2 (random init, word-level tokenizer over titles)",
        "settings": settings,
        "parameters": n_params,
        "trainable_parameters": trainable,
        "fit_seconds": round(fit_s, 1),
        "train_samples_per_second": round(samples / fit_s, 1),
        "train_log": model.meta.get("train_log"),
        "best_epoch": model.meta.get("best_epoch"),
        "stopped_by": model.meta.get("stopped_by"),
        "valid_users": args.valid_users,
        "test_users": args.users,
        "generation_seconds_per_user": round(gen_s / args.users, 3),
        "llm": {k: res[k] for k in ("hr@10", "ndcg@10")},
        "popularity_same_users": {k: pop[k] for k in ("hr@10", "ndcg@10")},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"cpu-{args.db.stem}{'-' + args.tag if args.tag else ''}.json").write_text(
        json.dumps(out, indent=1)
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
