"""Synthetic ImageNet64-sized inputs for bench/scale.py, in the two layouts users have.

Content: 64x64 crops of the package photos (imnet64.pipeline.sample_images.PHOTOS) at random
scales and positions, mirrored at random, with a random per-channel colour gain, brightness
offset and Gaussian noise, so that PNG sizes are those of varied photos, not of a repeated
tile (the mean PNG size is measured and reported, never assumed). Deterministic in (N, seed).

Layouts:
  png-tar      one uncompressed tar of PNGs named like the PixelRNN release:
               0000001.png, 0000002.png, ... (what `imnet64 label` reads in place)
  batch-files  the official ImageNet64 batch files: train_data_batch_K (K = 1..), each a
               pickle of {'data': uint8 (n, 12288) = R plane 64x64 row-major, then G, then B,
               'labels': list of ints 1..1000, 'mean': float64 (12288,)}, at most
               BATCH_ROWS rows per file (the release has 10 files of ~128 k rows)
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

from imnet64 import atomic
from imnet64.pipeline.sample_images import PHOTOS, load_photo

import numpy as np
from PIL import Image

SIZE = 64
BATCH_ROWS = 128_117  # rows per official batch file (1,281,167 / 10, rounded up)
LAYOUTS = ("png-tar", "batch-files")
MIN_SCALE = 0.12  # smallest crop side, as a fraction of the photo's short side


def iter_images(count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """`count` uint8 [64, 64, 3] images, varied as the module docstring says."""
    rng = np.random.default_rng(seed)
    photos = [load_photo(pkg, name) for pkg, name in PHOTOS]
    for _ in range(count):
        im = photos[int(rng.integers(len(photos)))]
        w, h = im.size
        side = max(SIZE // 2, int(min(w, h) * rng.uniform(MIN_SCALE, 1.0)))
        left = int(rng.integers(0, w - side + 1))
        top = int(rng.integers(0, h - side + 1))
        crop = im.resize((SIZE, SIZE), Image.BILINEAR, box=(left, top, left + side, top + side),
                         reducing_gap=2.0)
        x = np.asarray(crop, dtype=np.float32)
        if rng.random() < 0.5:
            x = x[:, ::-1]
        x = x * rng.uniform(0.75, 1.25, size=3) + rng.uniform(-25, 25)
        sigma = rng.uniform(0.0, 9.0)
        if sigma > 0.5:
            x = x + rng.normal(0.0, sigma, size=x.shape)
        yield np.clip(x, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def member_name(i: int) -> str:
    """The PixelRNN release's name of image i (0-based): 0000001.png, ..."""
    return f"{i + 1:07d}.png"


def write_png_tar(path: Path, count: int, seed: int = 0) -> dict:
    """The tar of `count` PNGs at `path` (atomic), and its figures."""
    total = 0
    with atomic.atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for i, image in enumerate(iter_images(count, seed)):
            data = png_bytes(image)
            info = tarfile.TarInfo(member_name(i))
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
            total += len(data)
    return {"images": count, "mean_png_bytes": round(total / count, 1),
            "input_bytes": path.stat().st_size}


def write_batch_files(folder: Path, count: int, seed: int = 0) -> dict:
    """The official batch files for `count` images under `folder` (each file atomic). The
    labels are random 1..1000 (imnet64 label ignores them; the teacher labels the pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    images = iter_images(count, seed)
    written, k, total_png = 0, 0, 0
    while written < count:
        n = min(BATCH_ROWS, count - written)
        data = np.empty((n, 3 * SIZE * SIZE), np.uint8)
        for row in range(n):
            image = next(images)
            if row < 200:  # PNG size from a sample of each file: encoding all would double
                total_png += len(png_bytes(image))  # the generation time
            data[row] = image.transpose(2, 0, 1).reshape(-1)  # planes R, G, B; row-major
        k += 1
        doc = {"data": data, "labels": [int(v) for v in rng.integers(1, 1001, n)],
               "mean": data.mean(axis=0)}
        atomic.write_bytes(folder / f"train_data_batch_{k}", pickle.dumps(doc, protocol=4))
        written += n
    sampled = min(200, BATCH_ROWS) * (k - 1) + min(200, count - BATCH_ROWS * (k - 1))
    return {"images": count, "files": k, "mean_png_bytes": round(total_png / sampled, 1),
            "input_bytes": sum(p.stat().st_size for p in folder.iterdir())}


def make_inputs(work: Path, layout: str, count: int, seed: int = 0) -> tuple[Path, dict]:
    """(the INPUT to give `imnet64 label`, its figures), made once per (layout, N, seed) and
    reused from `work` afterwards (a stamp file marks a finished one)."""
    stem = work / f"inputs-{layout}-{count}-s{seed}"
    stamp = stem.with_suffix(".json")
    target = stem.with_suffix(".tar") if layout == "png-tar" else stem
    if stamp.exists() and target.exists():
        return target, json.loads(stamp.read_text())
    if layout == "png-tar":
        figures = write_png_tar(target, count, seed)
    else:
        figures = write_batch_files(target, count, seed)
    atomic.write_json(stamp, figures)
    return target, figures
