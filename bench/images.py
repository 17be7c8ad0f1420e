"""Item-image embedding throughput (EfficientNet-Lite0, text/images.py) on this machine's
CPU with 2 torch threads: images/s end to end (JPEG decode, resize and crop, network),
and the decode share alone, at a few batch sizes. Writes docs/results/images/throughput.json.

    nice -n 10 python bench/images.py [--n 192] [--side 500]

The pictures are generated (coloured shapes on noise, saved as JPEG at `side` pixels, a
typical product-photo size): the cost depends on the pixels' count, not on what they show.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "images"


def make_pictures(folder: Path, n: int, side: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        im = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB")
        d = ImageDraw.Draw(im)
        x, y, r = (int(v) for v in rng.integers(side // 4, 3 * side // 4, 3))
        d.ellipse(
            (x - r // 2, y - r // 2, x + r // 2, y + r // 2),
            fill=tuple(rng.integers(0, 256, 3).tolist()),
        )
        path = folder / f"p{i}.jpg"
        im.save(path, quality=90)
        paths.append(str(path))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=192, help="pictures per measurement")
    ap.add_argument("--side", type=int, default=500, help="picture width and height")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]

    from directrec.text.effnet import pretrained
    from directrec.text.images import encode_images, load_image

    t0 = time.perf_counter()
    pretrained()
    load_s = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_pictures(Path(tmp), args.n, args.side)
        encode_images(paths[:8])  # warm-up: first-call allocations
        t0 = time.perf_counter()
        for p in paths:
            load_image(p)
        decode = args.n / (time.perf_counter() - t0)
        for batch in (16, 32, 64):
            t0, c0 = time.perf_counter(), time.process_time()
            encode_images(paths, batch_size=batch)
            s, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append(
                {
                    "batch_size": batch,
                    "seconds": round(s, 2),
                    "images_per_s": round(args.n / s, 1),
                    # CPU seconds spent: what 2 idle cores would give (no waiting for others)
                    "cpu_seconds": round(cpu, 2),
                    "images_per_s_if_cores_idle": round(args.n / (cpu / args.threads), 1),
                }
            )
            print(f"batch {batch}: {args.n / s:.1f} images/s, {args.n / cpu:.1f} per CPU-second")
    doc = {
        "what": "item image embedding throughput: JPEG decode + resize/crop + EfficientNet-Lite0 features",
        "command": f"nice -n 10 python bench/images.py --n {args.n} --side {args.side} --threads {args.threads}",
        "images": args.n,
        "side_px": args.side,
        "torch_threads": args.threads,
        "model_load_s": round(load_s, 2),
        "decode_only_images_per_s": round(decode, 1),
        "by_batch": rows,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus_visible": len(os.sched_getaffinity(0)),
            "torch": torch.__version__,
            "load_average_1m_at_start": round(load, 2),
            "note": "cores shared with other jobs during the run: images_per_s is a lower bound",
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "throughput.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {OUT / 'throughput.json'}")


if __name__ == "__main__":
    main()
