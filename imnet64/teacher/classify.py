"""Top-k classes of a few image files: the sanity check before labeling a million images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imnet64.teacher.images import read_rgb, to_teacher_input
from imnet64.teacher.loading import Teacher


@dataclass(frozen=True)
class Prediction:
    class_id: int
    name: str
    probability: float


def classify_files(teacher: Teacher, paths: Sequence[str | Path], top: int = 5,
                   batch_size: int = 32) -> list[list[Prediction]]:
    """For each path, the `top` classes by softmax probability over all 1001 logits."""
    import tensorflow as tf

    top = max(1, min(top, teacher.num_classes))
    images = [read_rgb(p) for p in paths]  # read all first: a bad file fails before any work
    results: list[list[Prediction]] = []
    for start in range(0, len(images), batch_size):
        batch = tf.stack([to_teacher_input(im, teacher.image_size)
                          for im in images[start:start + batch_size]])
        probs, ids = teacher.top_k(batch, top)
        for p_row, id_row in zip(probs, ids):
            results.append([Prediction(int(i), teacher.class_names[int(i)], float(p))
                            for p, i in zip(p_row, id_row)])
    return results
