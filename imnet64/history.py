"""What a run leaves for people to look at: history.json, curves.png, TensorBoard events.

Only rank 0 writes. history.json and curves.png are rewritten atomically after each epoch;
TensorBoard event files are append-only by design (a resumed run appends to new files).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from imnet64 import atomic

HISTORY = "history.json"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based: the number of epochs done when it was recorded
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float  # at the end of the epoch
    images_per_s: float  # training images per second, all ranks together
    seconds: float  # wall time of the epoch's training steps (this session)
    mfu: float | None  # achieved fraction of peak FLOP/s (None when the peak is unknown)


def load_history(run_dir: Path) -> list[EpochRecord]:
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return []
    return [EpochRecord(**row) for row in atomic.read_json(path)["epochs"]]


def write_history(run_dir: Path, records: list[EpochRecord]) -> None:
    def clean(value):  # JSON has no NaN/inf
        return None if isinstance(value, float) and not math.isfinite(value) else value

    rows = [{k: clean(v) for k, v in asdict(r).items()} for r in records]
    atomic.write_json(Path(run_dir) / HISTORY, {"epochs": rows})


def plot_curves(run_dir: Path, records: list[EpochRecord]) -> Path:
    """The seed's figure: accuracy (train vs val) above, cross-entropy below, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    epochs = [r.epoch for r in records]

    def series(name: str) -> list[float]:  # missing values (no val split) become gaps
        return [math.nan if getattr(r, name) is None else getattr(r, name) for r in records]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    top.plot(epochs, series("accuracy"), marker="o", label="Training Accuracy")
    top.plot(epochs, series("val_accuracy"), marker="o", label="Validation Accuracy")
    top.legend(loc="lower right")
    top.set_ylabel("Accuracy")
    top.set_ylim([min(top.get_ylim()[0], 0.0), 1])
    top.set_title("Training and Validation Accuracy")
    bottom.plot(epochs, series("loss"), marker="o", label="Training Loss")
    bottom.plot(epochs, series("val_loss"), marker="o", label="Validation Loss")
    bottom.legend(loc="upper right")
    bottom.set_ylabel("Cross Entropy")
    # not the seed's fixed [0, 2]: with 1000 classes the loss starts near ln(1000) = 6.9
    bottom.set_ylim([0, None])
    bottom.set_title("Training and Validation Loss")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    path = Path(run_dir) / CURVES
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path


class TensorBoardLog:
    """Scalars per epoch (and the learning rate / loss every few steps)."""

    def __init__(self, run_dir: Path):
        import tensorflow as tf

        self._tf = tf
        self.writer = tf.summary.create_file_writer(str(Path(run_dir) / TENSORBOARD))

    def step(self, global_step: int, **scalars: float) -> None:
        with self.writer.as_default(step=global_step):
            for name, value in scalars.items():
                self._tf.summary.scalar(f"step/{name}", value)

    def epoch(self, record: EpochRecord) -> None:
        with self.writer.as_default(step=record.epoch):
            for name, value in asdict(record).items():
                if name != "epoch" and value is not None:
                    group = "val" if name.startswith("val_") else "train"
                    self._tf.summary.scalar(f"{group}/{name.removeprefix('val_')}", value)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
