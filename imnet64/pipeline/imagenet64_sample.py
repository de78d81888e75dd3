"""A small ImageNet64 download-alike of real photos whose class is known, for the demo and
the README: `train_data_batch_1` and `val_data` in the official layout (pickle protocol 3,
dict of `data` uint8 (N, 12288) as R, G, B planes, `labels` 1..1000 in map_clsloc order,
`mean` in the train file), made from crops of photos that ship inside packages.

The classes are the photos' own: skimage's `chelsea` is a cat (the teacher calls it an
Egyptian cat), `coffee` a cup of espresso, `motorcycle_left` a motorbike (ImageNet has no
motorcycle class; moped is the nearest). Every 4th crop goes to `val_data`, the rest to the
train file, so the two hold different crops of the same photos.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from imnet64 import atomic
from imnet64.formats.imagenet64_batch import hwc_to_planes
from imnet64.formats.imagenet64_classes import devkit_classes
from imnet64.pipeline.sample_images import iter_sample, photo_stem

import numpy as np

# (package, photo, WordNet id of its class)
KNOWN_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("skimage", "data/chelsea.png", "n02124075"),  # Egyptian cat
    ("skimage", "data/coffee.png", "n07920052"),  # espresso
    ("skimage", "data/motorcycle_left.png", "n03785016"),  # moped
)
VAL_EVERY = 4


def _devkit_label(wnid: str) -> int:
    return next(c.devkit_id for c in devkit_classes() if c.wnid == wnid)


def _write(path: Path, images: list[np.ndarray], labels: list[int], mean: bool) -> None:
    data = np.stack([hwc_to_planes(im) for im in images])
    d = {"data": data, "labels": labels}
    if mean:
        d["mean"] = data.mean(axis=0)
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(d, f, protocol=3)  # what the authors' Python 3 pickle.dump wrote


def write_imagenet64_sample(out_dir: str | Path, count: int) -> tuple[Path, Path]:
    """`count` crops as out_dir/train_data_batch_1 (3/4) and out_dir/val_data (1/4)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_of = {Path(name).stem: _devkit_label(wnid) for _, name, wnid in KNOWN_PHOTOS}
    photos = tuple((pkg, name) for pkg, name, _ in KNOWN_PHOTOS)
    split: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
    for i, (name, image) in enumerate(iter_sample(count, photos)):
        images, labels = split[i % VAL_EVERY == VAL_EVERY - 1]
        images.append(np.asarray(image, np.uint8))
        labels.append(label_of[photo_stem(name)])
    train, val = out_dir / "train_data_batch_1", out_dir / "val_data"
    _write(train, *split[False], mean=True)
    _write(val, *split[True], mean=False)
    return train, val
