"""The ImageNet64 batch files' label ids, mapped into the teacher's class indices.

The batch files number classes 1..1000 in the ILSVRC devkit's `map_clsloc.txt` order
(`n02119789 1 kit_fox`, `n02100735 2 English_setter`, ...). The teacher's 1001-way output
(TF Hub MobileNet V2; also Keras and torchvision indices, shifted by one) has background at
0, then the 1000 classes in sorted-WordNet-id order. Using one numbering for the other is
the classic silent bug with this data set, so the mapping goes through the WordNet ids of
the shipped table (imnet64/data/imagenet64_map_clsloc.txt, tested against the class names).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

MAP_FILE = "data/imagenet64_map_clsloc.txt"
NUM_CLASSES = 1000


@dataclass(frozen=True)
class DevkitClass:
    wnid: str  # WordNet id, 'n02119789'
    devkit_id: int  # 1..1000, the batch files' label
    name: str  # 'kit_fox'


@functools.lru_cache(maxsize=1)
def devkit_classes() -> tuple[DevkitClass, ...]:
    """The 1000 rows of map_clsloc.txt, in devkit-id order."""
    text = resources.files("imnet64").joinpath(MAP_FILE).read_text("utf-8")
    rows = []
    for line in text.splitlines():
        if line.strip():
            wnid, devkit_id, name = line.split()
            rows.append(DevkitClass(wnid, int(devkit_id), name))
    rows.sort(key=lambda c: c.devkit_id)
    if [c.devkit_id for c in rows] != list(range(1, NUM_CLASSES + 1)):
        raise AssertionError(f"corrupt {MAP_FILE}")
    return tuple(rows)


@functools.lru_cache(maxsize=1)
def devkit_to_teacher() -> np.ndarray:
    """int16 [1001]: entry d is the teacher index (1..1000) of devkit label d (entry 0: 0).

    Teacher index = 1 + the class's rank among the sorted WordNet ids."""
    classes = devkit_classes()
    rank = {wnid: i for i, wnid in enumerate(sorted(c.wnid for c in classes))}
    table = np.zeros(NUM_CLASSES + 1, np.int16)
    for c in classes:
        table[c.devkit_id] = rank[c.wnid] + 1
    return table


def teacher_index(devkit_id: int) -> int:
    """The teacher's class index (1..1000) of a batch file's label (1..1000)."""
    if not 1 <= devkit_id <= NUM_CLASSES:
        raise ValueError(f"devkit label {devkit_id} is not in 1..{NUM_CLASSES}")
    return int(devkit_to_teacher()[devkit_id])


def devkit_id_of_teacher(index: int) -> int:
    """The inverse: the batch files' label (1..1000) of teacher class `index` (1..1000)."""
    hits = np.flatnonzero(devkit_to_teacher() == index)
    if index < 1 or len(hits) != 1:
        raise ValueError(f"teacher index {index} is not a class in 1..{NUM_CLASSES}")
    return int(hits[0])
