"""Checkpoints of a run: the last K (resume) and the best by validation loss (evaluate/export).

A checkpoint holds the model (weights and BatchNorm statistics), the optimizer (its step
counter and Adam moments) and `TrainState`: the epoch, the step inside it, the global step
and the running sums of the epoch's training metrics. Restoring it puts training back at
exactly that step, and the learning rate, a pure function of the global step, follows.

Layout: RUN_DIR/checkpoints/ckpt-<global step>.{index,data-*} + `checkpoint` (the manager's
state file); RUN_DIR/checkpoints/best/ckpt-<global step> + best.json (epoch, val_loss).
TensorFlow writes each checkpoint to temporary names and renames them, and the state file
is updated last, so a kill mid-save leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

from pathlib import Path

import imnet64  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from imnet64 import atomic

import tensorflow as tf

CHECKPOINTS = "checkpoints"
BEST = "best"


class TrainState(tf.Module):
    """The counters a resume needs, as variables so they live in the checkpoint."""

    def __init__(self) -> None:
        super().__init__(name="train_state")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.best_val_loss = tf.Variable(float("inf"), dtype=tf.float64, trainable=False,
                                         name="best_val_loss")
        # this rank's running sums over the current epoch (rank 0's are kept in checkpoints)
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
        self.correct = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="correct")
        self.seen = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seen")

    @property
    def counters(self) -> list[tf.Variable]:
        return [self.epoch, self.step_in_epoch, self.global_step, self.best_val_loss]

    @property
    def sums(self) -> list[tf.Variable]:
        return [self.loss_sum, self.correct, self.seen]

    def reset_sums(self) -> None:
        for v in self.sums:
            v.assign(0.0)


class Checkpoints:
    """The checkpoint managers of a run directory (only rank 0 saves)."""

    def __init__(self, run_dir: Path, checkpoint: tf.train.Checkpoint, keep: int = 3):
        self.dir = Path(run_dir) / CHECKPOINTS
        self.checkpoint = checkpoint
        self.latest = tf.train.CheckpointManager(checkpoint, str(self.dir), max_to_keep=keep,
                                                 checkpoint_name="ckpt")
        self.best = tf.train.CheckpointManager(checkpoint, str(self.dir / BEST), max_to_keep=1,
                                               checkpoint_name="ckpt")

    @property
    def latest_path(self) -> str | None:
        return self.latest.latest_checkpoint

    def restore_latest(self) -> str | None:
        path = self.latest.latest_checkpoint
        if path:
            # assert_existing_objects_matched: a checkpoint of another model shape is an error
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self, global_step: int) -> str:
        return self.latest.save(checkpoint_number=global_step)

    def save_best(self, global_step: int, epoch: int, val_loss: float) -> str:
        path = self.best.save(checkpoint_number=global_step)
        atomic.write_json(self.dir / BEST / "best.json",
                          {"checkpoint": Path(path).name, "epoch": epoch, "val_loss": val_loss})
        return path


def find_checkpoint(run_dir: Path, which: str = "best") -> str | None:
    """The path prefix of a run's best or latest checkpoint (None if there is none).

    `which` is "best", "latest", or a checkpoint path prefix.
    """
    folder = Path(run_dir) / CHECKPOINTS
    if which == "best":
        return tf.train.latest_checkpoint(str(folder / BEST)) or tf.train.latest_checkpoint(
            str(folder))
    if which == "latest":
        return tf.train.latest_checkpoint(str(folder))
    return which if Path(which + ".index").exists() else None
