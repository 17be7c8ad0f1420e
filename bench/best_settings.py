"""Print `--set model.key=value` flags for the best validation settings of each tuned
model of one dataset (docs/results/tuning/<data>-<model>.json, best by NDCG@10).

    python bench/best_settings.py ml1m
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TUNING = Path(__file__).resolve().parent.parent / "docs" / "results" / "tuning"


def main() -> None:
    data = sys.argv[1]
    flags = []
    for f in sorted(TUNING.glob(f"{data}-*.json")):
        doc = json.loads(f.read_text())
        for k, v in doc["best_by_ndcg@10"]["settings"].items():
            if k != "seed":
                flags.append(f"--set {doc['model']}.{k}={v}")
    print(" ".join(flags))


if __name__ == "__main__":
    main()
