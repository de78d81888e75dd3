"""Read a finished (or running) RUN_DIR back: its config, class names and trained model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imnet64 import atomic
from imnet64.errors import UserError
from imnet64.formats.image64 import SIZE
from imnet64.train.checkpoints import find_checkpoint, one_line
from imnet64.train.config import CHECKPOINT
from imnet64.train.model_config import ModelConfig

import tensorflow as tf

CONFIG = "config.json"
CLASSES = "classes.json"
STATUS = "status.json"  # what the run is doing or how it ended (imnet64.train.loop)


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
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a training run (no {CONFIG}; run imnet64 train)")
    return atomic.read_json(path)


def load_trained_run(run_dir: str | Path, checkpoint: str = CHECKPOINT) -> TrainedRun:
    """The run's model with the weights of its best (by val loss) or latest checkpoint.

    Checkpoints are found from their files (a damaged state file does not hide them); the
    latest is the newest one that reads back intact, a damaged best one is an error.

    Built in float32 whatever precision it trained in (the weights are float32 either way).
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    path = find_checkpoint(run_dir, checkpoint)
    if path is None:
        raise UserError(f"{run_dir} has no {checkpoint} checkpoint yet (train at least an epoch)")
    model = ModelConfig.from_json(config["model"], image_size=SIZE).build()
    try:
        status = tf.train.Checkpoint(model=model).restore(path)
        status.expect_partial()  # the optimizer and counters are not needed here
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        # find_checkpoint read it back intact: it is another model's checkpoint
        raise UserError(f"checkpoint {path} does not fit {run_dir}'s model: {one_line(e)}") from e
    classes_path = run_dir / CLASSES
    names = atomic.read_json(classes_path) if classes_path.exists() else [
        str(i) for i in range(config["num_classes"])]
    return TrainedRun(run_dir, config, list(names), path, model)
