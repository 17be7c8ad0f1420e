"""Where one SASRec training step spends its time on this machine, and how much padding
an epoch carries with random and with length-grouped batches (issue 11 §4). Written as
JSON with the exact command.

    python bench/epoch_cost.py --db out/bench/ml1m.duckdb

It runs against an older checkout's code, too (what it lacks is left out), to time a
change: PYTHONPATH=<checkout>/src python bench/epoch_cost.py --db … --out …
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from directrec.data.dataset import Dataset
from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.models import transformer
from directrec.models.sasrec import SASRecNet, SASRecNetConfig, batches
from directrec.models.transformer import (
    causal_padding_mask,
    full_softmax_ce,
    key_keep_mask,
    pack,
    trim_padding,
)


def packed_step(net: SASRecNet, opt: torch.optim.Optimizer, windows: torch.Tensor) -> None:
    """One training step of the ML-1M recipe on these windows: packed side by side, full
    softmax over every item, one optimiser step (bench/malloc_step.py times it too)."""
    w, seg, pos = pack(windows)
    keep = (seg[:, :-1] == seg[:, 1:]) & (seg[:, 1:] >= 0)
    hidden = net(w[:, :-1], (seg[:, :-1], pos[:, :-1]))[keep]
    loss = full_softmax_ce(hidden, net.item.weight[1:], w[:, 1:][keep] - 1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed(fn, repeats: int = 5) -> float:
    """Mean seconds of `fn()` after one warm-up call."""
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return round((time.perf_counter() - t) / repeats, 4)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=Path("docs/results/epoch-cost"))
    args = p.parse_args()
    torch.manual_seed(args.seed)
    ds = Dataset.from_store(args.db)
    fit = leave_one_out(ds.interactions).stage("valid")[0]
    windows = torch.from_numpy(Histories.from_interactions(fit).windows(args.max_len + 1))
    n_items, b, n, d = fit.n_items, args.batch_size, args.max_len, 64

    def padded(by_length: bool) -> int:  # positions the network computes in one epoch
        torch.manual_seed(args.seed)
        cut = batches(windows, b, by_length)
        return sum((trim_padding(windows[c]).shape[1] - 1) * len(c) for c in cut)

    def packed() -> int:  # the same for random batches packed into shared rows (`pack`)
        torch.manual_seed(args.seed)
        return sum(len(pack(windows[c])[0]) * n for c in batches(windows, b, False))

    seq = torch.randint(1, n_items, (b, n))
    step: dict = {}
    for attn in (0.2, 0.0):
        net = SASRecNet(n_items, SASRecNetConfig(max_len=n, dim=d, attn_dropout=attn)).train()
        step[f"blocks_fwd_bwd_attn_dropout_{attn}"] = timed(
            lambda net=net: net(seq).sum().backward()
        )
    # the same dropout rate as DropKey (`drop_keys`): pairs masked before the fused kernel
    net = SASRecNet(
        n_items, SASRecNetConfig(max_len=n, dim=d, attn_dropout=0.2, drop_keys=True)
    ).train()
    step["blocks_fwd_bwd_drop_keys_0.2"] = timed(lambda: net(seq).sum().backward())
    h = torch.randn(b * n, d, requires_grad=True)
    emb = torch.randn(n_items, d, requires_grad=True)
    y = torch.randint(0, n_items, (b * n,))
    step["full_softmax_fwd_bwd_fp32"] = timed(lambda: F.cross_entropy(h @ emb.T, y).backward())

    def bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = h @ emb.T
        F.cross_entropy(logits.float(), y).backward()

    step["full_softmax_fwd_bwd_bf16_autocast"] = timed(bf16)
    # what `loss=ce` runs since session 14: the same loss and gradients, chunk by chunk
    step["full_softmax_fwd_bwd_chunked"] = timed(lambda: full_softmax_ce(h, emb, y).backward())
    for chunk in (256, 512, 1024, 2048, 4096):  # rows of logits per chunk (2048: the default)
        step[f"full_softmax_fwd_bwd_chunk_{chunk}"] = timed(
            lambda chunk=chunk: full_softmax_ce(h, emb, y, chunk).backward()
        )
    for heads, ratio in ((1, 1), (2, 4)):  # SASRec+'s block (1 head, narrow MLP) vs ours
        net = SASRecNet(
            n_items,
            SASRecNetConfig(
                max_len=n, dim=d, heads=heads, dropout=0.1, attn_dropout=0.1, mlp_ratio=ratio
            ),
        ).train()
        step[f"blocks_fwd_bwd_heads_{heads}_mlp_{ratio}_dropout_0.1"] = timed(
            lambda net=net: net(seq).sum().backward()
        )
    q = torch.randn(b, 2, n, d // 2, requires_grad=True)
    mask = causal_padding_mask(seq > 0)
    for p_drop in (0.2, 0.0):
        step[f"attention_only_dropout_{p_drop}"] = timed(
            lambda p_drop=p_drop: (
                F.scaled_dot_product_attention(q, q, q, attn_mask=mask, dropout_p=p_drop)
                .sum()
                .backward()
            )
        )

    def drop_keys() -> None:
        kept = key_keep_mask((b, 2, n, n), 0.2, q.device) | torch.eye(n, dtype=torch.bool)
        F.scaled_dot_product_attention(q, q, q, attn_mask=kept & mask).sum().backward()

    step["attention_only_drop_keys_0.2"] = timed(drop_keys)
    x = torch.randn(b, n, d, requires_grad=True)  # one dropout site of a block
    step["dropout_fwd_bwd_torch"] = timed(lambda: F.dropout(x, 0.2, True).sum().backward())
    if hasattr(transformer, "dropout"):  # since session 19: the mask as 16-bit words
        step["dropout_fwd_bwd_directrec"] = timed(
            lambda: transformer.dropout(x, 0.2, True).sum().backward()
        )
    # A whole training step of the recipe in bench/zoo.sh's ml1m-gen-l4-* (4 blocks) and
    # ml1m-gen-l5-* (5): DropKey, packed random batches of 128 real windows, full softmax,
    # Adam; the mean of the same 10 batches, timed twice in turn (4, 5, 4, 5) against drift.
    real = windows[(windows > 0).sum(1) >= 2]
    torch.manual_seed(args.seed)
    cut = batches(real, b, False)

    def steps(blocks: int) -> float:
        torch.manual_seed(args.seed)
        net = SASRecNet(
            n_items,
            SASRecNetConfig(max_len=n, dim=d, layers=blocks, attn_dropout=0.2, drop_keys=True),
        ).train()
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)

        packed_step(net, opt, real[cut[0]])
        t = time.perf_counter()
        for rows in cut[1:11]:
            packed_step(net, opt, real[rows])
        return round((time.perf_counter() - t) / 10, 4)

    for blocks in (4, 5, 4, 5):
        step.setdefault(f"train_step_{blocks}_blocks_packed_drop_keys", []).append(steps(blocks))
    step["train_steps_per_epoch"] = len(cut)
    out = {
        "command": " ".join(["python", *sys.argv]),
        "code": str(Path(transformer.__file__).parents[1]),  # which directrec was timed
        "db": str(args.db),
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "batch": [b, n],
        "items": n_items,
        "windows": len(windows),
        "step_seconds": step,
        "positions_per_epoch": {
            "random_batches": padded(False),
            "length_batches": padded(True),
            "packed_random_batches": packed(),
            "real_positions": int(((windows[:, :-1] > 0) & (windows[:, 1:] > 0)).sum()),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.db.stem}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
