"""Cost as the catalogue grows (issue 40 §3): for catalogues of 10^4, 10^5 and 10^6 items,
what training, batch generation and one-user top-10 cost for each head. JSON in
docs/results/scale/catalogue.json with the exact command, the machine and the data.

    python bench/catalogue.py [--items 10000 100000 1000000] [--heads sasrec-ce,...]

Data: synthetic sequences with Zipf item popularity (exponent 0.9, ranks shuffled over
the ids) and sequential structure (each next item is, with probability 0.6, a fixed
successor of the previous one, else a fresh Zipf draw), `--users` users of 5–40 items
each; every catalogue item is in the index even if no one saw it. Item vectors for the
semantic-ID codes are random 384-d unit vectors (the text encoder's width), the successor
structure left for the network to learn: quality is not measured here, cost is.

Each (catalogue, head) runs in child processes through the product's Python API
(`directrec.models.create`, `fit`, `save`, `generate.pipeline.recommend`), one per job, so
each peak RSS is that job's alone:
- train: one epoch on `--train-users` users (all settings the head's recipe's, but
  `epochs` 1 and no validation): seconds per 1,000 training targets, the epoch seconds
  extrapolated to 10^7 targets (linear in them), peak RSS, the model on disk;
- generate: top-10 lists for `--gen-users` users in the batches `directrec generate`
  streams (1,024 users, fewer on a large catalogue: `pipeline.rows_per_batch`): users per
  second and peak RSS;
- serve: one user per call, top-10 through the same pipeline, one thread on the last
  core (taskset) (model time; the HTTP layer adds its own ~1 ms, docs/serving.md): p50 / p99 ms.
  `semantic-id-ivf` has `semantic-id`'s network (same seed; only its decoding differs): its
  row's `agreement` says whether the weights are byte-identical and what share of each
  served top-10 list the exact search's list holds (both heads in the same run).
A job that fails (out of memory, a timeout) is recorded with its error: what breaks first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "scale"
WORK = ROOT / "out" / "catalogue"
LISTS = WORK / "lists"  # each head's served top-10 lists, for SAME_NETWORK's comparison

# Each head: the recipe it starts from and the settings changed for the measurement.
HEADS: dict[str, tuple[str, dict]] = {
    "sasrec-ce": ("sasrec-ce", {}),  # full softmax over every item
    "sasrec-sampled": ("sasrec-ce", {"loss": "sampled"}),  # logQ-corrected, 512 negatives
    "semantic-id": ("semantic-id", {}),  # the hybrid: codes + an ID head over every item
    # the hybrid with its ID head searched through an IVF index (models/ann.py) instead of
    # a scan of every item: the same network as "semantic-id" (same seed, the search is
    # decoding only), so its lists are compared with that head's
    "semantic-id-ivf": ("semantic-id", {"id_search": "ivf"}),
    # TIGER-style: the codes alone, no per-item vectors, no ID head
    "semantic-codes": (
        "semantic-id",
        {"item_embedding": False, "id_loss": 0.0, "id_candidates": 0},
    ),
}


def synthetic(n_items: int, n_users: int, seed: int):
    """Interactions (user-major, chronological) over exactly `n_items` items."""
    from directrec.data.dataset import Interactions

    rng = np.random.default_rng(seed)
    ranks = 1.0 / np.arange(1, n_items + 1) ** 0.9
    cdf = np.cumsum(ranks / ranks.sum())
    ids = rng.permutation(n_items)  # popularity rank → item id
    successor = rng.permutation(n_items)
    lengths = rng.integers(5, 41, n_users)
    total = int(lengths.sum())
    draws = ids[np.minimum(np.searchsorted(cdf, rng.random(total)), n_items - 1)]
    follow = rng.random(total) < 0.6
    items = np.empty(total, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first = np.zeros(total, dtype=bool)
    first[starts] = True
    prev = -1
    for j in range(total):  # a successor chain needs the previous item: sequential
        prev = draws[j] if first[j] or not follow[j] else successor[prev]
        items[j] = prev
    users = np.repeat(np.arange(n_users), lengths)
    return Interactions(users, items, n_users, n_items)


def catalog(n_items: int, seed: int):
    from directrec.data.dataset import Catalog

    rng = np.random.default_rng(seed + 1)
    vec = rng.standard_normal((n_items, 384)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    empty = [""] * n_items
    return Catalog(
        titles=empty, texts=empty, categories=[[] for _ in range(n_items)], embeddings=vec
    )


# head → the head with the same network and exact decoding its served lists are compared with
SAME_NETWORK = {"semantic-id-ivf": "semantic-id"}


def settings_of(head: str, seed: int) -> dict:
    from directrec.recipes import resolve

    recipe, changed = HEADS[head]
    base = dict(resolve(recipe).settings)
    return {**base, **changed, "epochs": 1, "seed": seed, "threads": 0}


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def job_train(args: argparse.Namespace) -> dict:
    from directrec.models import create

    data = synthetic(args.n, args.train_users, args.seed)
    cat = catalog(args.n, args.seed)
    from directrec.recipes import resolve

    model = create(resolve(HEADS[args.head][0]).model, settings_of(args.head, args.seed))
    t0 = time.perf_counter()
    model.fit(data, cat)
    fit = time.perf_counter() - t0
    epoch = float(model.meta["train_log"][0]["seconds"])
    targets = len(data) - data.n_users  # every interaction but a user's first
    dest = WORK / f"{args.head}-{args.n}"
    model.save(dest)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    net = getattr(model, "net", None)
    keep = getattr(net, "id_keep", None)
    return {
        "fit_seconds": round(fit, 1),
        # the items the softmax spans: semantic-id's ID head skips items no one trained on
        "softmax_items": None
        if args.head == "semantic-codes"
        else (len(keep) if keep is not None else args.n),
        "epoch_seconds": round(epoch, 1),
        "train_targets": targets,
        "seconds_per_1k_targets": round(1000 * epoch / targets, 3),
        "epoch_seconds_at_1e7_targets": round(1e7 * epoch / targets),
        "peak_rss_mb": peak_mb(),
        "model_mb": round(size / 2**20, 1),
    }


def _load(args: argparse.Namespace):
    from directrec.generate.stages import load_pipeline

    return load_pipeline(WORK / f"{args.head}-{args.n}")


def job_generate(args: argparse.Namespace) -> dict:
    from directrec.data.histories import Histories
    from directrec.generate.pipeline import ListOptions, recommend, rows_per_batch

    model, stages = _load(args)
    data = synthetic(args.n, args.gen_users, args.seed + 7)
    size = rows_per_batch(model.n_items, 1024)  # as `directrec generate` batches
    # one call first, untimed, as loading is: what a model builds once (the ivf head's
    # index) is not a per-user cost
    recommend(model, Histories.from_interactions(data, [0]), ListOptions(k=10), stages=stages)
    t0 = time.perf_counter()
    for lo in range(0, data.n_users, size):
        users = np.arange(lo, min(lo + size, data.n_users))
        recommend(model, Histories.from_interactions(data, users), ListOptions(k=10), stages=stages)
    wall = time.perf_counter() - t0
    return {
        "users": data.n_users,
        "users_per_call": size,
        "users_per_second": round(data.n_users / wall, 1),
        "peak_rss_mb": peak_mb(),
    }


def job_serve(args: argparse.Namespace) -> dict:
    import torch

    from directrec.data.histories import Histories
    from directrec.generate.pipeline import ListOptions, recommend

    torch.set_num_threads(1)  # the parent pinned this process to one core (taskset)
    model, stages = _load(args)
    data = synthetic(args.n, args.serve_calls + 20, args.seed + 9)
    times, lists = [], []
    for u in range(data.n_users):
        h = Histories.from_interactions(data, [u])
        t0 = time.perf_counter()
        (out,) = recommend(model, h, ListOptions(k=10), stages=stages)
        times.append(time.perf_counter() - t0)
        lists.append(np.pad(out.items, (0, 10 - len(out.items)), constant_values=-1))
    ms = 1000 * np.array(times[20:])  # the first calls warm the allocator and caches
    LISTS.mkdir(parents=True, exist_ok=True)
    np.save(LISTS / f"{args.head}-{args.n}.npy", np.stack(lists))
    return {
        "calls": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "peak_rss_mb": peak_mb(),
    }


JOBS = {"train": job_train, "generate": job_generate, "serve": job_serve}


def agreement(head: str, n: int) -> dict | None:
    """For a head in SAME_NETWORK: whether its weights are its reference head's (byte for
    byte) and the mean share of each served top-10 list that the reference's holds."""
    ref = SAME_NETWORK.get(head)
    mine, theirs = LISTS / f"{head}-{n}.npy", LISTS / f"{ref}-{n}.npy"
    if ref is None or not (mine.exists() and theirs.exists()):
        return None
    a, b = np.load(mine), np.load(theirs)
    shared = [
        len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, (y >= 0).sum())
        for x, y in zip(a, b, strict=True)
    ]
    same = all(
        (WORK / f"{head}-{n}" / f).read_bytes() == (WORK / f"{ref}-{n}" / f).read_bytes()
        for f in ("weights.safetensors", "ids.json")
    )
    return {
        "reference": ref,
        "same_weights": same,
        "top10_shared": round(float(np.mean(shared)), 4),
    }


def run_job(job: str, n: int, head: str, args: argparse.Namespace) -> dict:
    """One job in a child process (its own peak memory, its own failure)."""
    cmd = [
        sys.executable,
        __file__,
        "--job",
        job,
        "--n",
        str(n),
        "--head",
        head,
        "--seed",
        str(args.seed),
        "--train-users",
        str(args.train_users),
        "--gen-users",
        str(args.gen_users),
        "--serve-calls",
        str(args.serve_calls),
    ]
    env = dict(os.environ)
    if job == "serve":  # one core, one thread for every library
        core = max(os.sched_getaffinity(0))
        cmd = ["taskset", "-c", str(core), *cmd]
        env |= {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    wall = round(time.perf_counter() - t0, 1)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {res.returncode}", "stderr_tail": tail, "wall_seconds": wall}
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "wall_seconds": wall}


PANELS = [
    ("train", "seconds_per_1k_targets", "training s / 1k targets"),
    ("train", "peak_rss_mb", "training peak RSS (MB)"),
    ("generate", "users_per_second", "batch generation users / s"),
    ("serve", "p99_ms", "one-user top-10 p99 (ms, one core)"),
]


def plot(doc: dict, dest: Path) -> None:
    """Each cost against the catalogue size, log–log, one line per head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    for ax, (job, key, title) in zip(axes, PANELS, strict=True):
        for head in doc["heads"]:
            pts = [
                (r["items"], r[job][key])
                for r in doc["runs"]
                if r["head"] == head and job in r and "error" not in r[job]
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=head)
        ax.set(xscale="log", yscale="log", title=title, xlabel="catalogue items")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)


def rerun(args: argparse.Namespace, heads: list[str]) -> None:
    """Run `args.rerun`'s jobs again for `heads` at `args.items` and replace them in `args.out`."""
    jobs = args.rerun.split(",")
    if set(jobs) - {"generate", "serve"}:
        raise SystemExit("--rerun takes generate and serve (training makes the models they read)")
    doc = json.loads(args.out.read_text())
    for row in doc["runs"]:
        if row["items"] in args.items and row["head"] in heads and "error" not in row["train"]:
            for job in jobs:
                row[job] = run_job(job, row["items"], row["head"], args)
                print(json.dumps({"items": row["items"], "head": row["head"], job: row[job]}))
            if (shared := agreement(row["head"], row["items"])) is not None:
                row["agreement"] = shared
    doc.setdefault("reruns", []).append(" ".join(["python", *sys.argv]))
    args.out.write_text(json.dumps(doc, indent=1))
    plot(doc, args.out.with_suffix(".png"))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--heads", default=",".join(HEADS))
    p.add_argument("--train-users", type=int, default=1000)
    p.add_argument("--gen-users", type=int, default=4096)
    p.add_argument("--serve-calls", type=int, default=200)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per job")
    p.add_argument("--out", type=Path, default=OUT / "catalogue.json")
    p.add_argument(
        "--rerun",
        default="",
        help="comma-separated jobs to run again for --heads at --items, replacing them in "
        "--out (its trained models under out/catalogue/ are reused); the file lists reruns",
    )
    p.add_argument("--job", choices=list(JOBS), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--head", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.job:
        print(json.dumps(JOBS[args.job](args)))
        return
    heads = args.heads.split(",")
    unknown = set(heads) - set(HEADS)
    if unknown:
        raise SystemExit(f"unknown heads {sorted(unknown)}; choose from {', '.join(HEADS)}")
    WORK.mkdir(parents=True, exist_ok=True)
    if args.rerun:
        rerun(args, heads)
        return
    doc: dict = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        },
        "data": {
            "train_users": args.train_users,
            "gen_users": args.gen_users,
            "items_per_user": "uniform 5–40",
            "popularity": "Zipf 0.9",
            "successor_share": 0.6,
            "item_vectors": "random 384-d unit vectors",
            "seed": args.seed,
        },
        "heads": {h: {"recipe": HEADS[h][0], "changed": HEADS[h][1]} for h in heads},
        "runs": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.items:
        for head in heads:
            row: dict = {"items": n, "head": head}
            for job in JOBS:
                row[job] = run_job(job, n, head, args)
                print(json.dumps({"items": n, "head": head, job: row[job]}), flush=True)
                if job == "train" and "error" in row[job]:
                    break  # nothing to generate or serve from
            if (shared := agreement(head, n)) is not None:
                row["agreement"] = shared
            doc["runs"].append(row)
            args.out.write_text(json.dumps(doc, indent=1))  # what is done so far survives
    plot(doc, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
