"""Item images → embeddings with ImageNet-pretrained EfficientNet-Lite0 (text/effnet.py;
its weights install with the project), batched, cached in the store like text embeddings.

An image is read with Pillow, flattened onto white where it is transparent (product
shots often are), its shorter side scaled to 224 and its centre cut out, as the network
was trained; the embedding is the pooled 1280-d feature of the last layer before the
classifier, L2-normalised. Items without an image get zero vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from directrec.data.dataset import Dataset
from directrec.data.schema import DataError
from directrec.progress import Steps
from directrec.text.effnet import FEATURES, MEAN, SIZE, STD, pretrained

MODEL_NAME = "efficientnet-lite0"


def load_image(path: str | Path, size: int = SIZE) -> np.ndarray:
    """One image as float32 [3, size, size] in 0..1 (resize shorter side, centre crop)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                rgba = im.convert("RGBA")
                im = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im.alpha_composite(rgba)
            im = im.convert("RGB")
    except FileNotFoundError as e:
        raise DataError("image file not found (moved since ingest?)", file=str(path)) from e
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(f"not a readable image ({e})", file=str(path)) from e
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0


@torch.inference_mode()
def encode_images(paths: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """L2-normalised float32 embeddings [len(paths), 1280]; "" (no image) gives zeros."""
    out = np.zeros((len(paths), FEATURES), dtype=np.float32)
    idx = [i for i, p in enumerate(paths) if p]
    if not idx:
        return out
    net = pretrained()
    with Steps("encode item images", len(idx), on=progress, unit="images") as bar:
        for s in range(0, len(idx), batch_size):
            part = idx[s : s + batch_size]
            x = torch.from_numpy(np.stack([load_image(paths[i]) for i in part]))
            feats = net.features((x - MEAN) / STD)
            out[part] = torch.nn.functional.normalize(feats, dim=1).numpy()
            bar.advance(len(part))
    return out


def item_image_embeddings(
    dataset: Dataset, db: str | Path | None = None, progress: bool = False
) -> np.ndarray:
    """Embeddings of every item's image, from the store's cache when present; computed
    and cached otherwise (a re-ingested catalogue row drops its item's cached vectors)."""
    from directrec.text.encoder import cached

    images = dataset.catalog.images or [""] * len(dataset.items)
    return cached(dataset, db, MODEL_NAME, lambda: encode_images(images, progress=progress))
