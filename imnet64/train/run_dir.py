"""Read a finished (or running) RUN_DIR back: its config, class names and trained model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imnet64.errors import UserError
from imnet64.train import run_files
from imnet64.train.checkpoints import find_checkpoint, one_line
from imnet64.train.config import CHECKPOINT
from imnet64.train.run_files import CLASSES, CONFIG, STATUS  # noqa: F401  (their home for callers)

import tensorflow as tf


@dataclass
class TrainedRun:
    run_dir: Path
    config: dict
    class_names: list[str]
    checkpoint: str  # path prefix of the checkpoint the weights came from
    model: tf.keras.Model  # float32, returns logits

    @property
    def dataset(self) -> Path:
        return Path(self.config["dataset"])


def load_run_config(run_dir: str | Path) -> dict:
    """RUN_DIR/config.json, checked (imnet64.train.run_files.read_config)."""
    return run_files.read_config(run_dir)


def load_trained_run(run_dir: str | Path, checkpoint: str = CHECKPOINT) -> TrainedRun:
    """The run's model with the weights of its best (by val loss) or latest checkpoint.

    Checkpoints are found from their files (a damaged state file does not hide them); the
    latest is the newest one that reads back intact, a damaged best one is an error.

    Built in float32 whatever precision it trained in (the weights are float32 either way).
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    run_files.check_layout(run_dir)
    names = run_files.read_classes(run_dir, config["num_classes"]) or [
        str(i) for i in range(config["num_classes"])]
    path = find_checkpoint(run_dir, checkpoint)
    if path is None:
        raise UserError(f"{run_dir} has no {checkpoint} checkpoint yet (train at least an epoch)")
    model = run_files.model_config(config).build()
    try:
        status = tf.train.Checkpoint(model=model).restore(path)
        status.expect_partial()  # the optimizer and counters are not needed here
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        # find_checkpoint read it back intact: it is another model's checkpoint
        raise UserError(f"checkpoint {path} does not fit {run_dir}'s model: {one_line(e)}") from e
    return TrainedRun(run_dir, config, list(names), path, model)
