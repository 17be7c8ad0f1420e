"""Generated product pictures for the image tests: a coloured shape on a noisy background,
each picture drawn differently (size, place, shade, noise) so that only the class, a
shape in a colour, is shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# (shape, RGB) per class: shapes and colours differ, as products of one kind would.
CLASSES = (
    ("circle", (220, 30, 30)),
    ("square", (30, 60, 220)),
    ("triangle", (30, 170, 40)),
    ("cross", (240, 200, 20)),
)


def draw(cls: int, rng: np.random.Generator, size: int = 96) -> Image.Image:
    shape, rgb = CLASSES[cls]
    noise = rng.integers(200, 256, (size, size, 3), dtype=np.uint8)
    im = Image.fromarray(noise, "RGB")
    d = ImageDraw.Draw(im)
    r = int(rng.integers(size // 4, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    col = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in rgb)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=col)
    elif shape == "square":
        d.rectangle(box, fill=col)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    else:
        w = r // 3
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=col)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=col)
    return im


def write_images(folder: Path, classes: list[int], seed: int = 0) -> list[str]:
    """One PNG per entry of `classes` in `folder`; their names, relative to it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for n, c in enumerate(classes):
        name = f"pic{n}.png"
        draw(c, rng).save(folder / name)
        names.append(name)
    return names
