"""Doctor's output-folder section: free space and inodes of the folder a planned run writes
to, against an estimate of what it writes there."""

from __future__ import annotations

import math
import os
from pathlib import Path

from imnet64.pipeline.doctor.report import DiskCheck

# Bytes per image, measured by serializing imnet64's own records (tfrecord_schema) for an image
# named like ImageNet's (train/n01440764/n01440764_10026.png, 35 characters) with top-5:
# a label record is 325 bytes + the image, a dataset record 456 + the image; TFRecord adds
# 16 bytes of framing and ~3 of length prefix; a label CSV row is ~60 bytes.
# tests/test_doctor.py checks these against real records of real photos.
LABEL_RECORD_OVERHEAD = 325 + 19
LABEL_CSV_ROW = 60
DATASET_RECORD_OVERHEAD = 456 + 19
# The mean PNG of 64x64 photos (our sample crops; docs/datasets.md: 7189 bytes/image). The
# label parts and png dataset shards keep each input's original bytes.
DEFAULT_IMAGE_BYTES = 7200
RAW_IMAGE_BYTES = 64 * 64 * 3  # --encoding raw
DEFAULT_SHARD_MIB = 128.0  # shard-records --shard-size-mb
FILES_PER_LABEL_SHARD = 5  # .tfrecord .csv .json .timing.json .lock
DISK_MARGIN = 1.05  # what the estimate may be off by before it is called a problem
STAGES = ("label", "dataset", "all")


def estimate_bytes_per_image(stage: str, image_bytes: int = DEFAULT_IMAGE_BYTES,
                             encoding: str = "png") -> int:
    """Bytes one image adds to the label parts, to the dataset shards, or both ("all")."""
    label = image_bytes + LABEL_RECORD_OVERHEAD + LABEL_CSV_ROW
    dataset = (image_bytes if encoding == "png" else RAW_IMAGE_BYTES) + DATASET_RECORD_OVERHEAD
    return {"label": label, "dataset": dataset, "all": label + dataset}[stage]


def check_disk(folder: str | os.PathLike, images: int | None, stage: str = "all",
               image_bytes: int = DEFAULT_IMAGE_BYTES, shards: int = 1,
               shard_mib: float = DEFAULT_SHARD_MIB) -> tuple[DiskCheck, list[str]]:
    """Free space and inodes of `folder` (or its nearest existing parent) against what a
    run over `images` images writes there."""
    folder = Path(folder).expanduser().absolute()
    at = next(p for p in (folder, *folder.parents) if p.exists())
    st = os.statvfs(at)
    free = st.f_bavail * st.f_frsize
    inodes = st.f_favail if st.f_files else None  # some file systems report 0 of 0
    check = DiskCheck(str(folder), str(at), free, inodes, stage, images, None, None, None)
    if images is None:
        return check, []
    per_image = estimate_bytes_per_image(stage, image_bytes)
    needed = per_image * images
    dataset_bytes = estimate_bytes_per_image("dataset", image_bytes) * images
    dataset_files = 2 * max(2, math.ceil(dataset_bytes / (shard_mib * 2**20))) + 3
    label_files = FILES_PER_LABEL_SHARD * shards + 1
    needed_inodes = {"label": label_files, "dataset": dataset_files,
                     "all": label_files + dataset_files}[stage]
    check.bytes_per_image, check.needed_bytes, check.needed_inodes = per_image, needed, \
        needed_inodes
    check.estimate = (f"{per_image} bytes/image = a {image_bytes}-byte PNG kept in the "
                      + {"label": "label part", "dataset": "dataset shard",
                         "all": "label part and again in the dataset shard"}[stage]
                      + " + record overhead; files: 5 per label shard, 2 per dataset shard")
    problems = []
    if needed * DISK_MARGIN > free:
        problems.append(f"{folder}: {images} images need about {size_text(needed)} "
                        f"({check.estimate.split(' =')[0]}), only {size_text(free)} free on "
                        f"{at}")
    if inodes is not None and needed_inodes > inodes:
        problems.append(f"{folder}: about {needed_inodes} files to write, only {inodes} "
                        f"free inodes on {at}")
    return check, problems


def size_text(n: float) -> str:
    """Bytes for people: "512 B", "1.5 KiB", ... "2.0 TiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"
