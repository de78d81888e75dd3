"""Checkpoints of a run: the last K (resume) and the best by validation loss (evaluate/export).

A checkpoint holds the model (weights and BatchNorm statistics), the optimizer (its step
counter and Adam moments) and `TrainState`: the epoch, the step inside it, the global step
and the running sums of the epoch's training metrics. Restoring it puts training back at
exactly that step, and the learning rate, a pure function of the global step, follows.

Layout: RUN_DIR/checkpoints/ckpt-<global step>.{index,data-*}; RUN_DIR/checkpoints/best/
ckpt-<global step> + best.json (epoch, val_loss); RUN_DIR/checkpoints/damaged/ (checkpoints
set aside, see below). Each folder also has TensorFlow's `checkpoint` state file, written
for other tools (`tf.train.latest_checkpoint`, TensorBoard) but never trusted here:
checkpoints are found from their files on disk. TensorFlow writes each checkpoint to
temporary names and its .index last, so a kill mid-save leaves the previous one the newest.

Resuming tries the checkpoints newest first (the best one too: it is a full checkpoint):
each is read back in full (every tensor, so a truncated, bit-flipped or missing file shows)
before anything is restored, so a damaged one never leaves the model half-restored. Each
one skipped is logged with the reason. When one restores, those newer than it are moved
to checkpoints/damaged/ckpt-N/ (with reason.txt) before training goes on, so the new
checkpoints of the same steps cannot overwrite them, and rotation (`--keep-checkpoints`)
only ever deletes checkpoints older than the one it just wrote. If checkpoints exist but
none restores, that is an error that changes nothing, unless a restart was asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imnet64 import atomic
from imnet64.errors import UserError, one_line  # one_line: also for loop, run_dir, export
from imnet64.train import run_files

import tensorflow as tf

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
BEST = "best"
DAMAGED = "damaged"
STATE_FILE = "checkpoint"  # TensorFlow's name for a folder's checkpoint state file
PREFIX = "ckpt"
_FILE = re.compile(rf"^{PREFIX}-(\d+)\.(?:index|data-\d+-of-\d+)$")


class TrainState(tf.Module):
    """The counters a resume needs, as variables so they live in the checkpoint."""

    def __init__(self, with_kl: bool = False) -> None:
        """`with_kl`: also sum the KL figure of soft and online targets (only then: a hard
        run's checkpoints hold the same variables as before distillation existed)."""
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
        self.kl_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="kl_sum") \
            if with_kl else None

    @property
    def counters(self) -> list[tf.Variable]:
        return [self.epoch, self.step_in_epoch, self.global_step, self.best_val_loss]

    @property
    def sums(self) -> list[tf.Variable]:
        sums = [self.loss_sum, self.correct, self.seen]
        return sums + [self.kl_sum] if self.kl_sum is not None else sums

    def reset_sums(self) -> None:
        for v in self.sums:
            v.assign(0.0)


# ---- finding and checking checkpoints on disk ---------------------------------------------


@dataclass(frozen=True)
class Found:
    """One checkpoint on disk: its path prefix (folder/ckpt-N) and step N."""

    prefix: Path
    step: int

    @property
    def files(self) -> list[Path]:
        return sorted(p for p in self.prefix.parent.glob(f"{self.prefix.name}.*")
                      if _FILE.match(p.name))

    def __str__(self) -> str:
        return str(self.prefix)


def on_disk(folder: Path) -> list[Found]:
    """The checkpoints in `folder`, found from their .index/.data-* files (not from the state
    file, which may be stale or damaged), newest first."""
    steps = set()
    with contextlib.suppress(OSError):
        for path in Path(folder).iterdir():
            match = _FILE.match(path.name)
            if match and path.is_file():
                steps.add(int(match.group(1)))
    return [Found(Path(folder) / f"{PREFIX}-{n}", n) for n in sorted(steps, reverse=True)]


def problem(prefix: str | Path) -> str | None:
    """Why the checkpoint at `prefix` cannot be restored, or None if it reads back intact.

    Reads every tensor: TensorFlow checks each one's checksum, so a truncated or bit-flipped
    .data file shows here, as does a missing or unreadable .index or .data file."""
    if not Path(f"{prefix}.index").is_file():
        return "its .index file is missing"
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # noqa: BLE001  (OpError, DataLossError, IndexError, ...: all mean damaged)
        return one_line(e)
    return None


@contextlib.contextmanager
def _quiet_tf_logging() -> Iterator[None]:
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _state_file_ok(folder: Path) -> bool:
    """False if `folder`'s state file exists but TensorFlow cannot parse it."""
    if not (folder / STATE_FILE).exists():
        return True
    with _quiet_tf_logging():
        try:
            return tf.train.get_checkpoint_state(str(folder)) is not None
        except Exception:  # noqa: BLE001
            return False


def _write_state_file(folder: Path, found: list[Found]) -> None:
    """TensorFlow's state file for `found` (oldest first, the newest is the latest), for other
    tools; atomic. Without checkpoints it is removed (nothing to point at)."""
    if not found:
        (folder / STATE_FILE).unlink(missing_ok=True)
        return
    names = [f.prefix.name for f in sorted(found, key=lambda f: f.step)]
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
    atomic.write_text(folder / STATE_FILE, "\n".join(lines) + "\n")


def _set_aside(found: Found, reason: str, damaged_dir: Path, label: str) -> Path:
    """Move a checkpoint's files to damaged_dir/<label>[.k]/ with reason.txt (kept, never
    deleted: they may still be of use to someone)."""
    target = damaged_dir / label
    k = 1
    while target.exists():
        k += 1
        target = damaged_dir / f"{label}.{k}"
    target.mkdir(parents=True)
    atomic.write_text(target / "reason.txt", f"{found.prefix}: {reason}\n")
    for path in found.files:
        os.replace(path, target / path.name)
    return target


def _keep_state_file_copy(folder: Path, damaged_dir: Path, label: str) -> None:
    """A copy of a state file TensorFlow cannot parse, for a look (it is then rewritten)."""
    state = folder / STATE_FILE
    target = damaged_dir / label
    k = 1
    while target.exists():
        k += 1
        target = damaged_dir / f"{label}.{k}"
    damaged_dir.mkdir(parents=True, exist_ok=True)
    os.replace(state, target)


# ---- the run's checkpoints ----------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    path: str | None  # the checkpoint restored (None: a fresh start)
    skipped: list[tuple[Found, str]]  # newer ones that did not restore, with the reason


class Checkpoints:
    """A run directory's checkpoints (only rank 0 saves and restores)."""

    def __init__(self, run_dir: Path, checkpoint: tf.train.Checkpoint, keep: int = 3):
        self.dir = Path(run_dir) / CHECKPOINTS
        self.best_dir = self.dir / BEST
        self.damaged_dir = self.dir / DAMAGED
        self.checkpoint = checkpoint
        # restore() creates the Checkpoint's save counter, write() alone does not save it:
        # create it now so that every checkpoint has it and a restore finds all it expects
        _ = checkpoint.save_counter
        self.keep = max(1, keep)
        # the step and path of the checkpoint this session restored or last wrote: saving
        # the same step again would only rewrite the same state
        self.last_step = 0
        self.last_path: str | None = None

    @property
    def latest_path(self) -> str | None:
        found = on_disk(self.dir)
        return str(found[0].prefix) if found else None

    def candidates(self) -> list[Found]:
        """Every checkpoint a resume could start from, newest first; at the same step the
        regular one before the best one."""
        both = [(f, 0) for f in on_disk(self.dir)] + [(f, 1) for f in on_disk(self.best_dir)]
        return [f for f, _ in sorted(both, key=lambda item: (-item[0].step, item[1]))]

    def restore_newest(self, restart_if_damaged: bool = False) -> Restored:
        """Restore the newest checkpoint that reads back intact; set newer damaged ones
        aside. Raises UserError, changing nothing, if there are checkpoints but none
        restores (unless `restart_if_damaged`: then all are set aside and training starts
        over)."""
        skipped: list[tuple[Found, str]] = []
        chosen = None
        for found in self.candidates():
            reason = problem(found.prefix)
            if reason is None:
                chosen = found
                break
            skipped.append((found, reason))
            log.warning("skipped checkpoint %s: %s", found.prefix, reason)
        if chosen is None and skipped and not restart_if_damaged:
            listed = "; ".join(f"{f.prefix.parent.name}/{f.prefix.name}: {r}" for f, r in skipped)
            raise UserError(
                f"no checkpoint in {self.dir} restores ({listed}); they were left as they are: "
                "repair or remove them, or rerun with --restart-if-damaged to start over at "
                f"epoch 1 (the damaged files are then kept in {self.damaged_dir})")
        if chosen is not None:
            try:
                status = self.checkpoint.restore(str(chosen.prefix))
                # another model's checkpoint (other shapes or layers) is an error
                status.assert_existing_objects_matched()
                status.expect_partial()  # e.g. the save counter of TensorFlow's own manager
            except Exception as e:  # noqa: BLE001
                # it read back intact, so it was written for another model: nothing to fall
                # back to that would be right (the variables may be partly overwritten now)
                raise UserError(f"checkpoint {chosen.prefix} does not fit this run's model "
                                f"({one_line(e)}): use a new RUN_DIR") from e
        for found, reason in skipped:
            where = "best-" if found.prefix.parent == self.best_dir else ""
            target = _set_aside(found, reason, self.damaged_dir, f"{where}{found.prefix.name}")
            log.warning("kept the damaged %s in %s", found.prefix, target)
        for folder, label in ((self.dir, "state-file"), (self.best_dir, "best-state-file")):
            if not _state_file_ok(folder):
                _keep_state_file_copy(folder, self.damaged_dir, label)
                log.warning("%s could not be parsed: kept it in %s and wrote a new one",
                            folder / STATE_FILE, self.damaged_dir)
            if folder.is_dir():
                _write_state_file(folder, on_disk(folder))
        if chosen is not None:
            self.last_step, self.last_path = chosen.step, str(chosen.prefix)
        return Restored(str(chosen.prefix) if chosen else None, skipped)

    def _write(self, folder: Path, global_step: int, keep: int) -> str:
        """Write ckpt-<global_step> into `folder`, then delete the oldest beyond `keep`
        (never one newer than the one just written), and update the state file."""
        folder.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint.write(str(folder / f"{PREFIX}-{global_step}"))
        found = on_disk(folder)
        older = [f for f in found if f.step < global_step]
        for old in older[max(0, keep - 1):]:
            for file in old.files:
                file.unlink(missing_ok=True)
        _write_state_file(folder, on_disk(folder))
        return str(path)

    def save(self, global_step: int) -> str | None:
        """Checkpoint the current state as ckpt-<global_step>. Returns its path; the restored
        or last written one if nothing changed since (same step); None if nothing was
        trained at all yet."""
        if global_step == self.last_step:
            return self.last_path
        self.last_path = self._write(self.dir, global_step, self.keep)
        self.last_step = global_step
        return self.last_path

    def save_best(self, global_step: int, epoch: int, val_loss: float) -> str:
        path = self._write(self.best_dir, global_step, 1)
        atomic.write_json(self.best_dir / run_files.BEST_RECORD,
                          {"checkpoint": Path(path).name, "epoch": epoch, "val_loss": val_loss})
        return path


# ---- evaluate / export ------------------------------------------------------------------------


def _newest_intact(folder: Path) -> str | None:
    """The newest checkpoint in `folder` that reads back intact (skipped ones are logged);
    None if there is none at all; UserError if there are some but all are damaged."""
    skipped = []
    for found in on_disk(folder):
        reason = problem(found.prefix)
        if reason is None:
            return str(found.prefix)
        log.warning("skipped checkpoint %s: %s", found.prefix, reason)
        skipped.append(f"{found.prefix.name}: {reason}")
    if skipped:
        raise UserError(f"no checkpoint in {folder} restores ({'; '.join(skipped)})")
    return None


def _best(folder: Path) -> Found | None:
    """The best checkpoint: the one best.json names if its files are there, else the newest."""
    found = on_disk(folder)
    record = run_files.read_best(folder)  # a damaged best.json is named, not guessed around
    named = [f for f in found if record and f.prefix.name == record.checkpoint]
    if named:
        return named[0]
    return found[0] if found else None


def find_checkpoint(run_dir: Path, which: str = "best") -> str | None:
    """The path prefix of a run's best or latest checkpoint (None if there is none).

    `which` is "best" (the latest if the run has no best one: no val split), "latest" (the
    newest intact one), or a checkpoint path prefix. A damaged best or named checkpoint is a
    UserError saying what is wrong (evaluating another one instead would mislead)."""
    folder = Path(run_dir) / CHECKPOINTS
    if which == "latest":
        return _newest_intact(folder)
    if which == "best":
        best = _best(folder / BEST)
        if best is None:
            return _newest_intact(folder)
        reason = problem(best.prefix)
        if reason:
            raise UserError(f"the best checkpoint {best.prefix} is damaged ({reason}): use "
                            "--checkpoint latest or --checkpoint PATH")
        return str(best.prefix)
    if not Path(which + ".index").exists():
        return None
    reason = problem(which)
    if reason:
        raise UserError(f"checkpoint {which} is damaged ({reason})")
    return which
