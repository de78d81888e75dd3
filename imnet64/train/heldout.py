"""How well a student matches its teacher on held-out images (crops of photos that gave no
image to training): the teacher is run on the very pixels the student sees, restricted to
the kept classes and renormalised (as `--targets online` does at T = 1), and compared with
the student: top-1 agreement and mean KL(teacher || student), as big_vision's distill
configs report them. Unlike the val split, no stored label is needed: any image works."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from imnet64.teacher.loading import Teacher
from imnet64.train.distill_loss import kl_divergence, top1_agreement
from imnet64.train.targets import online_targets

import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class HeldOutScores:
    count: int
    agreement: float  # student top-1 == teacher top-1 among the kept classes
    kl: float  # mean KL(teacher || student) at T = 1

    def to_json(self) -> dict:
        return asdict(self)


def read_images(paths: Iterable[str | Path]) -> np.ndarray:
    """64x64 image files -> uint8 [N, 64, 64, 3]."""
    from PIL import Image

    def rgb(path):
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), np.uint8)

    return np.stack([rgb(p) for p in paths])


def heldout_scores(model: tf.keras.Model, teacher: Teacher, teacher_ids: Sequence[int],
                   images: np.ndarray, batch_size: int = 64) -> HeldOutScores:
    """Score `model` against `teacher` on uint8 `images` [N, 64, 64, 3]."""
    agreements, kls = [], []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], tf.uint8)
        logits = tf.cast(model(batch, training=False), tf.float32)
        teacher_probs = online_targets(teacher, teacher_ids, batch)
        agreements.append(top1_agreement(logits, teacher_probs).numpy())
        kls.append(kl_divergence(teacher_probs, logits).numpy())
    if not agreements:
        return HeldOutScores(0, float("nan"), float("nan"))
    return HeldOutScores(len(images), float(np.concatenate(agreements).mean()),
                         float(np.concatenate(kls).mean()))


def score_run(run_dir: str | Path, images: np.ndarray, teacher: Teacher | None = None,
              checkpoint: str = "best") -> HeldOutScores:
    """A trained run's student against `teacher` (default: the teacher that labeled the
    run's dataset, or the run's online teacher) on uint8 `images` [N, 64, 64, 3]."""
    from imnet64.formats.manifest import load_manifest
    from imnet64.train.online_teacher import load_online_teacher
    from imnet64.train.run_dir import load_trained_run
    from imnet64.train.targets import kept_teacher_ids

    run = load_trained_run(run_dir, checkpoint)
    manifest = load_manifest(run.dataset)
    if teacher is None:
        spec = (run.config.get("online_teacher") or {}).get("spec")
        online = load_online_teacher(spec, manifest)
        teacher, ids = online.teacher, online.teacher_ids
    else:
        ids = kept_teacher_ids(manifest)
    return heldout_scores(run.model, teacher, ids, images)
