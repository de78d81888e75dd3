"""What a training step minimises, per `--targets` (imnet64.train.targets): the batch the
student sees (mixed up or not), its targets, and the per-example loss, plus the KL figure
history.json reports for the soft and online targets.

    hard    fused sparse softmax CE on the kept class (with mixup: CE to the mixed one-hots)
    soft    T^2 CE to the stored top-k on the kept classes, tempered   (KL reported)
    online  T^2 KL(teacher || student), the frozen teacher run on the very (mixed) batch

Everything here runs inside the training step's tf.function, on each rank's own batch: the
online teacher needs no collective, so it works under any World (Horovod or tf.distribute).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imnet64.teacher.loading import Teacher
from imnet64.train import distill_loss
from imnet64.train.mixup import mix_with_rolled, mixup_weight
from imnet64.train.targets import online_targets, tempered_from_kept_mass

import tensorflow as tf


@dataclass(frozen=True)
class Objective:
    targets: str = "hard"
    num_classes: int = 0  # of the dataset (the one-hots of hard targets under mixup)
    temperature: float = 1.0
    mixup: float = 0.0  # alpha; 0: off
    seed: int = 0  # with the global step, keys each batch's mixup weight (a resume mixes alike)
    teacher: Teacher | None = None  # online only
    teacher_ids: Sequence[int] = ()  # the teacher's class of each kept class (online only)

    @property
    def needs_soft_labels(self) -> bool:
        """The input pipeline must also yield the stored kept-class distribution."""
        return self.targets == "soft"

    @property
    def reports_kl(self) -> bool:
        return self.targets != "hard"

    def prepare(self, batch: tuple, global_step: tf.Tensor) -> tuple:
        """(images the student sees, hard labels, targets [B, C] or None) of an input batch
        (images, labels, kept-class teacher mass: used by soft targets only)."""
        images, labels = batch[0], batch[1]
        if self.targets == "hard" and self.mixup <= 0:
            return images, labels, None  # today's step, op for op
        if self.targets == "soft":
            targets = tempered_from_kept_mass(batch[2], labels, self.temperature)
        elif self.targets == "hard":
            targets = tf.one_hot(labels, self.num_classes, dtype=tf.float32)
        else:
            targets = None
        if self.mixup > 0:
            seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(global_step, tf.int64)])
            weight = mixup_weight(self.mixup, seed)
            images = mix_with_rolled(images, weight)
            targets = None if targets is None else mix_with_rolled(targets, weight)
        if self.targets == "online":  # the teacher sees the (mixed) pixels the student sees
            targets = online_targets(self.teacher, self.teacher_ids, images, self.temperature)
        return images, labels, targets

    def losses(self, logits: tf.Tensor, labels: tf.Tensor,
               targets: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor | None]:
        """float32 per-example (loss trained on, KL figure or None)."""
        t = self.temperature
        if targets is None:
            return distill_loss.hard_cross_entropy(logits, labels), None
        if self.targets == "hard":  # mixed one-hots
            return distill_loss.soft_cross_entropy(logits, targets), None
        kl = distill_loss.kl_divergence(targets, logits, t)
        if self.targets == "online":
            return kl, kl
        return distill_loss.soft_cross_entropy(logits, targets, t), kl


HARD = Objective()  # today's training: hard labels, no mixup
