"""ImageNet64 batch files in the exact official layout, written by the tests themselves.

As PatrykChrabaszcz/Imagenet32_Scripts made them (image2numpy_imagenet_train.py): each image
becomes one uint8 row r.flatten() + g.flatten() + b.flatten() (12288 values), `labels` a
list of Python ints 1..1000 in map_clsloc.txt order, `mean` the float64 mean row in train
files; `pickle.dump(d, f)` under Python 3 (protocol 3), or the same dict as .npz.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

from imnet64.formats.imagenet64_classes import devkit_classes
from imnet64.pipeline.sample_images import load_photo

import numpy as np
from PIL import Image

# Real photos whose ImageNet class is known (WordNet id): see FACTS.md. ImageNet has no
# "motorcycle" class; moped is the nearest (the skimage photo is a motorbike).
KNOWN_PHOTOS = (
    ("skimage", "data/chelsea.png", "n02124075"),  # Egyptian cat
    ("skimage", "data/coffee.png", "n07920052"),  # espresso
    ("skimage", "data/motorcycle_left.png", "n03785016"),  # moped
)


def devkit_id(wnid: str) -> int:
    return next(c.devkit_id for c in devkit_classes() if c.wnid == wnid)


def photo_64(package: str, name: str, frac: float = 1.0) -> np.ndarray:
    """A centred square crop (`frac` of the short side) of a photo, resized to 64x64."""
    im = load_photo(package, name)
    w, h = im.size
    side = int(min(w, h) * frac)
    left, top = (w - side) // 2, (h - side) // 2
    crop = im.crop((left, top, left + side, top + side)).resize((64, 64), Image.BILINEAR)
    return np.asarray(crop, np.uint8)


def known_photo_images() -> tuple[list[np.ndarray], list[int]]:
    """Two crops of each known photo, with their devkit labels (1..1000)."""
    images, labels = [], []
    for package, name, wnid in KNOWN_PHOTOS:
        for frac in (1.0, 0.8):
            images.append(photo_64(package, name, frac))
            labels.append(devkit_id(wnid))
    return images, labels


def official_rows(images: list[np.ndarray]) -> np.ndarray:
    """The authors' row layout: R plane, then G, then B."""
    rows = []
    for img in images:
        r, g, b = img[:, :, 0].flatten(), img[:, :, 1].flatten(), img[:, :, 2].flatten()
        rows.append(np.array(list(r) + list(g) + list(b), dtype=np.uint8))
    return np.vstack(rows)


def batch_dict(images: list[np.ndarray], labels: list[int], mean: bool = True) -> dict:
    data = official_rows(images)
    d = {"data": data, "labels": [int(v) for v in labels]}
    if mean:
        d["mean"] = np.mean(data, axis=0)
    return d


def write_pickle(path: Path, d: dict, protocol: int = 3) -> Path:
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=protocol)
    return path


def write_npz(path: Path, d: dict, compressed: bool = False) -> Path:
    save = np.savez_compressed if compressed else np.savez
    save(path, **{k: np.asarray(v) for k, v in d.items()})
    return path


def write_download_zip(path: Path, files: dict[str, bytes], folder: str = "",
                       compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip like image-net.org's (members in an optional folder)."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in files.items():
            z.writestr(folder + name, data)
    return path


def pickle_bytes(d: dict, protocol: int = 3) -> bytes:
    buf = io.BytesIO()
    pickle.dump(d, buf, protocol=protocol)
    return buf.getvalue()
