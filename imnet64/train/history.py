"""What a run leaves for people to look at: history.json, curves.png, TensorBoard events.

Only rank 0 writes. history.json and curves.png are rewritten atomically after each epoch
(curves.png by a background thread: drawing it takes matplotlib ~0.1-1 s, which the other
ranks would otherwise wait for); TensorBoard event files are append-only by design (a
resumed run appends to new files).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from imnet64 import atomic
from imnet64.cluster import provenance
from imnet64.formats import provenance as provenance_schema
from imnet64.train import run_files
from imnet64.train.run_files import CURVES, HISTORY, TENSORBOARD

log = logging.getLogger(__name__)


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
    # share of `seconds` that rank 0 spent blocked waiting for its next batch (0-100; None
    # in histories written before it was measured)
    input_stall_pct: float | None = None
    # mean time the other ranks waited at the end of the epoch for rank 0's end-of-epoch
    # work (history, TensorBoard, checkpoints); None with one rank
    rank0_wait_s: float | None = None
    # --targets soft|online: the mean T^2 KL(targets || student) over the epoch's training
    # batches (None for hard). On the val split, any target: the mean KL(teacher || student)
    # at T = 1 and the top-1 agreement with the stored teacher probabilities, as imnet64
    # evaluate reports them (None without a val split or stored probabilities).
    kl: float | None = None
    val_kl: float | None = None
    val_agreement: float | None = None


def load_history(run_dir: Path) -> list[EpochRecord]:
    """history.json's epochs ([] without one); a damaged one is a UserError that says how
    to go on (imnet64.train.run_files)."""
    return run_files.read_history_rows(run_dir, EpochRecord)


def write_history(run_dir: Path, records: list[EpochRecord]) -> None:
    """history.json, with the provenance of the session writing it: the block config.json
    holds (rank 0 rewrites config.json at the start of each session)."""
    def clean(value):  # JSON has no NaN/inf
        return None if isinstance(value, float) and not math.isfinite(value) else value

    rows = [{k: clean(v) for k, v in asdict(r).items()} for r in records]
    atomic.write_json(Path(run_dir) / HISTORY,
                      {"epochs": rows, provenance_schema.KEY: _session_provenance(Path(run_dir))})


def _session_provenance(run_dir: Path) -> dict:
    try:
        block = atomic.read_json(run_dir / "config.json").get(provenance_schema.KEY)
    except (OSError, ValueError, AttributeError):
        block = None
    return block if isinstance(block, dict) else provenance.collect()


def accuracy_axis_top(values: list[float]) -> float:
    """The accuracy axis' top: 1.2 x the best value drawn, at least 0.05, at most 1. At 1000
    classes a young run's accuracy is a few percent, which a fixed [0, 1] axis draws as a
    flat line on the floor."""
    best = max((v for v in values if math.isfinite(v)), default=1.0)
    return min(1.0, max(0.05, 1.2 * best))


def epoch_axis_range(epochs: list[int]) -> tuple[float, float]:
    """Half an epoch of margin each side: with one or two epochs the default range is a
    fraction of an epoch wide and the integer locator falls back to ticks like 0.945."""
    return min(epochs, default=1) - 0.5, max(epochs, default=1) + 0.5


def plot_curves(run_dir: Path, records: list[EpochRecord]) -> Path:
    """The seed's figure: accuracy (train vs val) above, cross-entropy below, per epoch.
    (matplotlib's object API, not pyplot: safe to call from a background thread.)"""
    import matplotlib.ticker
    from matplotlib.figure import Figure

    epochs = [r.epoch for r in records]

    def series(name: str) -> list[float]:  # missing values (no val split) become gaps
        return [math.nan if getattr(r, name) is None else getattr(r, name) for r in records]

    fig = Figure(figsize=(8, 8))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(epochs, series("accuracy"), marker="o", label="Training Accuracy")
    top.plot(epochs, series("val_accuracy"), marker="o", label="Validation Accuracy")
    top.legend(loc="lower right")
    top.set_ylabel("Accuracy")
    top.set_ylim([0.0, accuracy_axis_top(series("accuracy") + series("val_accuracy"))])
    top.set_title("Training and Validation Accuracy")
    bottom.plot(epochs, series("loss"), marker="o", label="Training Loss")
    bottom.plot(epochs, series("val_loss"), marker="o", label="Validation Loss")
    bottom.legend(loc="upper right")
    bottom.set_ylabel("Cross Entropy")
    # not the seed's fixed [0, 2]: with 1000 classes the loss starts near ln(1000) = 6.9
    losses = [v for v in series("loss") + series("val_loss") if math.isfinite(v)]
    bottom.set_ylim([0, 1.1 * max(losses) if losses else None])  # the highest point inside
    bottom.set_title("Training and Validation Loss")
    bottom.set_xlabel("epoch")
    # min_n_ticks=1: with one epoch there is one whole number on the axis, and the default
    # (2) makes the locator give up its integer rule
    bottom.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    bottom.set_xlim(*epoch_axis_range(epochs))
    fig.tight_layout()
    path = Path(run_dir) / CURVES
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path


class CurvePlotter:
    """Draws curves.png on a background thread: `submit` returns at once, so rank 0's
    end-of-epoch work does not make the other ranks wait for matplotlib. Only the newest
    history is drawn when several are waiting; `close` waits for the last drawing."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._cond = threading.Condition()
        self._pending: list[EpochRecord] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="imnet64-curves", daemon=True)
        self._thread.start()

    def submit(self, records: list[EpochRecord]) -> None:
        with self._cond:
            self._pending = list(records)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                records, self._pending = self._pending, None
            if records is None:  # closed and nothing left to draw
                return
            try:
                plot_curves(self.run_dir, records)
            except Exception as e:  # noqa: BLE001  (a figure is never worth a failed run)
                log.warning("could not draw %s: %s", self.run_dir / CURVES, e)

    def close(self) -> None:
        """Draw what was submitted last, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()


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

    def epoch_scalars(self, epoch: int, **scalars: float) -> None:
        """More per-epoch scalars, known after `epoch(record)` was written."""
        with self.writer.as_default(step=epoch):
            for name, value in scalars.items():
                self._tf.summary.scalar(f"train/{name}", value)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
