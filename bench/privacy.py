"""The privacy–utility curve of sasrec-ce: the product's `directrec benchmark` run once per
privacy budget (`--set dp_epsilon=E`; ε = ∞ is the same run without DP), with the same
settings, seed and protocol otherwise; each point's NDCG@10, HR@10, wall time and the ε the
accountant recorded go to docs/results/privacy/NAME.json (written after every point;
`--resume` keeps the points already there), beside popularity on the same split. `--jobs 2`
runs two points at a time (give each `--set threads=1` on a 2-core machine).

    python bench/privacy.py --db out/bench/ml100k.duckdb --dataset MovieLens-100K \\
        --epsilons 1,4,8,inf --set max_len=50 --set epochs=10 --set batch_size=128 \\
        --set lr=0.005
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", required=True)
    p.add_argument("--dataset", default="MovieLens-1M", help="its name in the results")
    p.add_argument("--epsilons", default="1,4,8,inf", help="budgets; inf = no DP")
    p.add_argument("--set", dest="settings", action="append", default=[], help="key=value")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work", type=Path, default=ROOT / "out" / "privacy")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "privacy")
    p.add_argument("--name", default="curve", help="the results file: OUT/NAME.json")
    p.add_argument("--reference", default="pop", help="a baseline run once on the same split")
    p.add_argument("--jobs", type=int, default=1, help="points run at the same time")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the points OUT/NAME.json already holds for these settings; run the rest",
    )
    args = p.parse_args()
    target = args.out / f"{args.name}.json"
    doc = {
        "bench": " ".join(["python", *sys.argv]),
        "dataset": args.dataset,
        "db": args.db,
        "model": "sasrec-ce",
        "settings": args.settings,
        "seed": args.seed,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "processor": platform.machine(),
            "python": platform.python_version(),
            "note": f"{args.jobs} point(s) at a time; wall times are upper bounds on a shared machine",
        },
        "points": [],
    }
    done: dict[str, dict] = {}
    if args.resume and target.exists():
        old = json.loads(target.read_text())
        if (old["db"], old["settings"], old["seed"]) == (args.db, args.settings, args.seed):
            done = {str(pt["epsilon"]): pt for pt in old["points"]}
            doc["reference"] = old.get("reference")
    args.out.mkdir(parents=True, exist_ok=True)
    if not doc.get("reference") and args.reference:
        dest = args.work / args.reference
        cmd = [str(BIN / "directrec"), "benchmark", "--db", args.db, "--models", args.reference]
        cmd += ["--split", "loo", "--k", "10", "--seed", str(args.seed), "--out", str(dest)]
        subprocess.run([*cmd, "--no-progress"], check=True, capture_output=True)
        result = json.loads((dest / "results.json").read_text())
        m = result["results"][0]["metrics"]
        doc["reference"] = {
            "model": args.reference,
            "command": " ".join(["directrec", *cmd[1:]]),
            "fingerprint": result["dataset"]["fingerprint"],
            "hr@10": round(m["hr@10"], 5),
            "ndcg@10": round(m["ndcg@10"], 5),
        }
    order = [float(raw) for raw in args.epsilons.split(",")]
    lock = threading.Lock()

    def key(eps: float) -> str:
        return "inf" if math.isinf(eps) else str(eps)  # as a point records its ε

    def record(point: dict) -> None:
        with lock:  # points in the order asked, whichever finished first
            doc["points"].append(point)
            doc["points"].sort(key=lambda pt: order.index(float(pt["epsilon"])))
            target.write_text(json.dumps(doc, indent=1) + "\n")
            print(json.dumps(point), flush=True)

    def run(eps: float) -> None:
        name = "inf" if math.isinf(eps) else f"{eps:g}"
        dest = args.work / f"eps-{name}"
        sets = [*args.settings, *([] if math.isinf(eps) else [f"dp_epsilon={eps:g}"])]
        cmd = [
            str(BIN / "directrec"),
            "benchmark",
            "--db",
            args.db,
            "--models",
            "sasrec-ce",
            "--split",
            "loo",
            "--k",
            "10",
            "--seed",
            str(args.seed),
            "--out",
            str(dest),
            "--save-models",
            str(dest / "models"),
            "--no-progress",
            *[x for s in sets for x in ("--set", s)],
        ]
        dest.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with open(dest / "stderr.log", "w") as log:  # the epoch lines, to follow a long run
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=log)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            tail = (dest / "stderr.log").read_text()[-3000:]
            raise SystemExit(f"{' '.join(cmd)} failed:\n{tail}")
        result = json.loads((dest / "results.json").read_text())["results"][0]
        meta = json.loads((dest / "models" / "sasrec-ce" / "config.json").read_text())["meta"]
        dp = meta.get("dp")
        valid = [e["valid_ndcg@10"] for e in meta.get("train_log", []) if "valid_ndcg@10" in e]
        record(
            {
                "epsilon": "inf" if math.isinf(eps) else eps,
                "command": " ".join(["directrec", *cmd[1:]]),
                "ndcg@10": round(result["metrics"]["ndcg@10"], 5),
                "hr@10": round(result["metrics"]["hr@10"], 5),
                "wall_seconds": round(wall, 1),
                "fit_seconds": round(result["fit_seconds"], 1),
                "epochs": len(meta.get("train_log", [])),
                "best_epoch": meta.get("best_epoch"),
                "valid_ndcg@10": max(valid) if valid else None,  # what settings are chosen by
                "epsilon_spent": dp["epsilon_spent"] if dp else None,
                "delta": dp["delta"] if dp else None,
                "noise_multiplier": dp["noise_multiplier"] if dp else None,
                "steps": dp["steps"] if dp else None,
                "run_beside": args.jobs - 1,
            }
        )

    for eps in order:
        if key(eps) in done:
            record(done[key(eps)])
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for f in [pool.submit(run, eps) for eps in order if key(eps) not in done]:
            f.result()
    target.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
