"""ImageNet class names shipped with the package: index 0 'background', then 1000 classes."""

from __future__ import annotations

import functools
import re
from importlib import resources


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    text = resources.files("imnet64").joinpath("data/imagenet_class_names.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(names) == 1001 and names[0] == "background", "corrupt class name file"
    return names


def safe_folder_name(name: str, class_id: int | None = None) -> str:
    """A class name usable as one folder name everywhere (no separators, no dots-only).

    The id prefix keeps names unique: ImageNet has two 'crane's and two 'maillot's.
    """
    cleaned = re.sub(r"[^\w\-]+", "_", name, flags=re.UNICODE).strip("_") or "class"
    return cleaned if class_id is None else f"{class_id:04d}_{cleaned}"
