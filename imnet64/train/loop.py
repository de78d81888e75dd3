"""`imnet64 train`: the trainer, which runs the encoder on a dataset's shards, one process or
many ranks (Horovod or tf.distribute, imnet64.cluster.world).

A custom loop (Horovod's Keras callbacks are broken on TF >= 2.16). Per step (the step
itself: imnet64.train.train_step): the learning rate from the seed's schedule at
t = global_step / steps_per_epoch, a forward/backward pass with gradients averaged over ranks,
an Adam update, and a stop flag OR-ed over ranks in the same allreduce round. Per epoch: BatchNorm
statistics averaged over ranks, validation on every rank's part of the val split, metrics
summed over ranks, then rank 0 writes history.json, curves.png, TensorBoard scalars and a
checkpoint (plus the best one by validation loss).

Restarting the same command in the same RUN_DIR resumes from the newest checkpoint that
restores (damaged ones are skipped and set aside, see checkpoints.py): same epoch, step,
optimizer state and learning rate. Each epoch reads the data in an order fixed by (seed,
epoch), and a resume inside an epoch skips the batches already trained on. A resume with
other options, or with another dataset (other class names or shards), is refused
(imnet64.train.run_dir.prepare_run_dir); the options alone are checked by TrainConfig.check.

status.json says what the run is doing or how it ended: running, finished, preempted /
stopped (a stop signal: checkpointed, exit 75), or failed (with the error's one line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imnet64 import atomic, disk_errors
from imnet64.cluster import folder_lock, peer_loss
from imnet64.cluster.environment import Environment
from imnet64.cluster.preemption import (
    REQUEUE_EXIT_CODE,
    STOP_FILE,
    StopRequest,
    parse_signal,
    stop_signals,
)
from imnet64.cluster.world import World, init_world
from imnet64.errors import UserError
from imnet64.formats.manifest import Manifest, load_manifest
from imnet64.train import input_pipeline as data
from imnet64.train import run_files, run_state, shard_errors
from imnet64.train.checkpoints import Checkpoints, TrainState, one_line
from imnet64.train.config import PRECISIONS, TrainConfig
from imnet64.train.eval_step import make_eval_step
from imnet64.train.finite import absurd_val_loss, diverged, variables_are_finite
from imnet64.train.history import (
    CurvePlotter,
    EpochRecord,
    TensorBoardLog,
    load_history,
    write_history,
)
from imnet64.train.model import flops_per_image
from imnet64.train.objective import Objective
from imnet64.train.online_teacher import OnlineTeacher, load_online_teacher
from imnet64.train.peak_flops import mfu, peak_per_rank
from imnet64.train.precise_bn import precise_statistics
from imnet64.train.precision import WHY_KEY as PRECISION_WHY_KEY
from imnet64.train.precision import resolve_precision
from imnet64.train.run_dir import STATUS, prepare_run_dir, resolved_config
from imnet64.train.schedule import Schedule
from imnet64.train.train_step import make_optimizer, make_train_step

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainResult:
    state: str  # "finished", "preempted" (requeue signal, stop file) or "stopped" (TERM, INT)
    epoch: int  # epochs completed
    step_in_epoch: int
    global_step: int
    history: list[EpochRecord]
    rank: int
    world_size: int

    @property
    def exit_code(self) -> int:
        return REQUEUE_EXIT_CODE if self.state in ("preempted", "stopped") else 0


@dataclass(frozen=True)
class ValScores:
    """One validation pass, summed over ranks (NaN / None: no val split, no teacher
    probabilities in its records)."""

    loss: float = math.nan
    accuracy: float = math.nan
    kl: float | None = None  # KL(teacher || student) at T = 1
    agreement: float | None = None  # top-1 agreement with the teacher


# ---- setup ---------------------------------------------------------------------------------


def _check_dataset(manifest: Manifest) -> None:
    """What training needs of a dataset, checked before anything is written: at least two
    classes, and every shard there with the size its manifest says (one stat per file; the
    contents are checked when reading them fails)."""
    if manifest.num_classes < 2:
        raise UserError(f"dataset {manifest.root} has {manifest.num_classes} class(es): "
                        "training a classifier needs at least 2 classes")
    shard_errors.check_sizes(manifest, ["train", "val"])


def _all_variables(*roots) -> list[tf.Variable]:
    """Every variable of these objects (model, optimizer incl. loss scale, counters), in the
    same order on every rank (the objects are built identically). Not the Checkpoint's own
    save counter: only rank 0, which saves and restores, has one."""
    seen, out = set(), []
    for root in roots:
        for obj in tf.train.TrackableView(root).descendants():
            if isinstance(obj, tf.Variable) and id(obj) not in seen:
                seen.add(id(obj))
                out.append(obj)
    return out


def _space_needed(cfg: TrainConfig) -> int | None:
    """Free space the run needs from now on: the kept checkpoints, one being written and
    the best one (from the size of its newest checkpoint; None before the first)."""
    one = run_files.checkpoint_bytes(cfg.run_dir)
    if one is None:  # before the first checkpoint: weights and two Adam moments, float32
        try:
            model = cfg.model_config(load_manifest(cfg.dataset).num_classes).build()
            one = 3 * 4 * model.count_params() + (64 << 10)
        except Exception:  # noqa: BLE001  (an estimate is not worth another error)
            return None
    return one * (cfg.keep_checkpoints + 2) + (1 << 20)


# ---- the loop ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingParts:
    """What the trainer works with, built once by `_Trainer.setup` before the first step.
    Rank 0 alone writes files: `checkpoints`, `tensorboard` and `curves` are None on the
    other ranks, and their `history` stays empty."""

    manifest: Manifest
    steps: int  # per epoch
    schedule: Schedule
    model: tf.keras.Model
    flops: int  # per image, forward pass (MFU)
    optimizer: tf.keras.optimizers.Optimizer
    objective: Objective
    state: TrainState  # the run's counters and the epoch's running sums (checkpointed)
    checkpoints: Checkpoints | None
    resumed_from: str | None  # the checkpoint restored (None: a new run)
    history: list[EpochRecord]  # the epochs done; rank 0 appends each as it ends
    tensorboard: TensorBoardLog | None
    curves: CurvePlotter | None
    data_threads: int  # tf.data threads per pipeline: this rank's share of the host's cores
    peak_total: float | None  # FLOP/s of all ranks (None: unknown, no MFU)
    peak_source: str
    train_step: Callable  # imnet64.train.train_step.make_train_step
    eval_step: Callable  # imnet64.train.eval_step.make_eval_step
    has_val: bool  # the dataset has a non-empty val split


@dataclass(frozen=True)
class EpochOutcome:
    """What training one epoch measured, for its end (`_Trainer.end_epoch`)."""

    seconds: float  # the epoch's wall time in this session
    images_per_s: float  # all ranks (the first step of a session, which traces, not timed)
    input_stall_pct: float  # share of `seconds` blocked waiting for the next batch


class _Trainer:
    def __init__(self, cfg: TrainConfig, world: World, stop: StopRequest | None = None,
                 precision_why: str = ""):
        self.cfg, self.world = cfg, world
        self.run_dir = Path(cfg.run_dir)
        # the command's (installed before TensorFlow loaded), or one of our own
        requeue = parse_signal(cfg.signal)
        self.stop = stop or StopRequest(stop_signals(requeue), requeue_signal=requeue)
        self.prepared = False  # RUN_DIR checked and config.json written: status.json is ours
        self.precision_why = precision_why  # why cfg.precision (resolve_precision): config.json
        self.lock: folder_lock.FolderLock | None = None  # RUN_DIR's writer's lock (rank 0)
        self.reserve: run_state.SpaceReserve | None = None  # room to say "failed" (rank 0)
        # (counters, steps per epoch) as soon as they exist: what status.json reports, also
        # when the setup fails after RUN_DIR became ours
        self.counters: tuple[TrainState, int] | None = None
        self.parts: TrainingParts | None = None  # built once by setup()
        # the next epoch's pipeline, started in the background while an epoch ends
        self.ahead: tuple[int, data.StartedInBackground] | None = None

    def setup(self) -> None:
        """Everything before the first step: dataset, model, RUN_DIR, restore, broadcast;
        then history, logs, input threads, the MFU peak and the compiled steps."""
        cfg, world, chief = self.cfg, self.world, self.world.is_chief
        # the dataset, steps and schedule; the model, optimizer and counters (not restored)
        manifest = load_manifest(cfg.dataset)
        _check_dataset(manifest)
        tf.keras.utils.set_random_seed(cfg.seed)
        steps = _steps_per_epoch(cfg, manifest, world)
        base = Schedule(cfg.lr_max, cfg.init_scale, cfg.final_scale, cfg.warmup_epochs,
                        cfg.epochs - cfg.warmup_epochs)
        schedule = base.scaled(world.size if cfg.lr_scaling else 1)
        model, flops, optimizer, teacher, objective, state = _build_model(cfg, manifest)
        self.counters = (state, steps)

        # rank 0 checks or writes config.json and restores; then every rank has its state
        resolved = resolved_config(cfg, manifest, world, steps, schedule, flops, teacher)
        resolved[PRECISION_WHY_KEY] = self.precision_why
        checkpoints, resumed_from = self._open_run_dir(
            resolved, manifest, tf.train.Checkpoint(model=model, optimizer=optimizer,
                                                    state=state))
        # rank 0's weights, moments, counters (restored or freshly initialised) everywhere
        world.broadcast_variables(_all_variables(model, optimizer, state))
        if not chief:
            state.reset_sums()  # rank 0 holds the epoch's sums so far for everyone

        done = int(state.epoch.numpy())
        history = [r for r in load_history(self.run_dir) if r.epoch <= done] if chief else []
        peak = peak_per_rank(cfg.precision, cfg.peak_flops, world.local_size)
        val = manifest.splits.get("val")
        self.parts = TrainingParts(
            manifest=manifest, steps=steps, schedule=schedule, model=model, flops=flops,
            optimizer=optimizer, objective=objective, state=state, checkpoints=checkpoints,
            resumed_from=resumed_from, history=history,
            tensorboard=TensorBoardLog(self.run_dir) if chief else None,
            curves=CurvePlotter(self.run_dir) if chief else None,
            data_threads=data.default_parallelism(world.local_size),
            peak_total=peak.flops_per_s * world.size if peak.flops_per_s else None,
            peak_source=peak.source,
            train_step=make_train_step(model, optimizer, world, state, objective,
                                       fp16=cfg.precision == "fp16", xla=cfg.xla),
            eval_step=make_eval_step(model),
            has_val=val is not None and val.count > 0)

    def _open_run_dir(self, resolved: dict, manifest: Manifest, checkpoint: tf.train.Checkpoint
                      ) -> tuple[Checkpoints | None, str | None]:
        """Rank 0 locks RUN_DIR, checks or writes config.json and restores the newest
        checkpoint that restores; every rank raises rank 0's error, if any. Returns rank 0's
        Checkpoints (None on the others) and the checkpoint restored (None: a new run)."""
        cfg, world, chief = self.cfg, self.world, self.world.is_chief
        error = self._lock_run_dir() if chief else None
        if chief and error is None:
            run_state.note_previous_session(self.run_dir)
            error = prepare_run_dir(self.run_dir, resolved, manifest.class_names)
        error = world.broadcast_object(error, name="config_check")
        if error:
            raise UserError(error)
        self.prepared = True

        checkpoints = Checkpoints(self.run_dir, checkpoint, cfg.keep_checkpoints) \
            if chief else None
        outcome = self._restore(checkpoints) if chief else None
        resumed, error = world.broadcast_object(outcome, name="resumed_from")
        if error:
            raise UserError(error)
        return checkpoints, resumed

    def _lock_run_dir(self) -> str | None:
        """Rank 0: RUN_DIR's lock (one writer per folder), unless `train --np` started this
        rank: its launcher holds the lock for all its ranks. An error message or None."""
        if Environment.read().self_launched:
            return None
        try:
            self.lock = folder_lock.acquire(self.run_dir, "imnet64 train")
        except UserError as e:
            return str(e)
        return None

    def _restore(self, checkpoints: Checkpoints) -> tuple[str | None, str | None]:
        """Rank 0: restore the newest checkpoint that restores. (path or None, error)."""
        try:
            restored = checkpoints.restore_newest(self.cfg.restart_if_damaged)
        except UserError as e:
            return None, str(e)
        if restored.skipped and restored.path is None:
            log.warning("none of the %d checkpoint(s) restores: starting over at epoch 1 "
                        "(--restart-if-damaged); the damaged ones are kept in %s",
                        len(restored.skipped), checkpoints.damaged_dir)
        return restored.path, None

    # -- helpers

    def guarded(self, batches: tf.data.Dataset, split: str):
        """Iterate `batches`; a read error (a damaged shard) becomes a UserError that names
        the shard (found by checking this rank's shards of `split` against the manifest)."""
        manifest = self.parts.manifest
        paths = manifest.shard_paths(split)
        if len(paths) >= self.world.size:  # the files this rank reads (input_pipeline's dealing)
            paths = paths[self.world.rank::self.world.size]
        return shard_errors.guarded(batches, manifest, split, paths)

    def info(self, msg: str, *args) -> None:
        if self.world.is_chief:
            log.info(msg, *args)

    def epoch_batches(self, epoch: int, skip: int) -> tf.data.Dataset:
        cfg, w, p = self.cfg, self.world, self.parts
        options = data.InputOptions(shuffle=cfg.shuffle, augment=cfg.augment,
                                    seed=cfg.seed * 1000 + epoch, parallelism=p.data_threads,
                                    with_soft_labels=p.objective.needs_soft_labels)
        ds = data.records_dataset(p.manifest, "train", cfg.batch_size, options,
                                  rank=w.rank, size=w.size)
        return ds.skip(skip).take(p.steps - skip)

    def validate(self) -> ValScores:
        cfg, w, p = self.cfg, self.world, self.parts
        if not p.has_val:
            return ValScores()
        options = dataclasses.replace(data.ONE_PASS, parallelism=p.data_threads,
                                      with_soft_labels=True)
        ds = data.records_dataset(p.manifest, "val", cfg.batch_size, options,
                                  rank=w.rank, size=w.size)
        sums = np.zeros(6)
        for images, labels, teacher_mass in self.guarded(ds, "val"):
            s = p.eval_step(images, labels, teacher_mass)
            sums += [float(s["loss_sum"]), float(s["correct"]), len(labels),
                     float(s["with_teacher"]), float(s["kl_sum"]), float(s["agreements"])]
        loss_sum, correct, count, with_teacher, kl_sum, agreements = w.sum(sums, name="val_sums")
        if count == 0:
            return ValScores()
        if not with_teacher:
            return ValScores(loss_sum / count, correct / count)
        return ValScores(loss_sum / count, correct / count, kl_sum / with_teacher,
                         agreements / with_teacher)

    def set_status(self, state: str, **extra) -> None:
        if self.world.is_chief:
            counters, steps = self.counters
            atomic.write_json(self.run_dir / STATUS, {
                "state": state, "epoch": int(counters.epoch.numpy()),
                "step_in_epoch": int(counters.step_in_epoch.numpy()),
                "global_step": int(counters.global_step.numpy()),
                "epochs": self.cfg.epochs, "steps_per_epoch": steps,
                "time": time.time(), **run_state.writer(), **extra})

    def sync_batchnorm(self) -> None:
        """Each rank's BatchNorm moving statistics come from its own batches: average them
        (collective)."""
        bn = [v for v in self.parts.model.non_trainable_variables if "moving_" in v.name]
        self.world.average_variables(bn, name="bn_stats")

    def save_checkpoint(self, at: tuple[int, int, float] | None = None,
                        close_epoch: Callable[[np.ndarray], None] | None = None
                        ) -> tuple[str | None, float]:
        """Every save (mid-epoch, on a stop, at an epoch's end) is this one sequence, called
        by every rank at the same point, so that every rank issues the same collectives in
        the same order whoever saves (tf.distribute numbers them per process): the weights
        checked finite (no collective; `at`: the (epoch, step, lr) an error names), the
        epoch's running sums of all ranks folded into rank 0's copy (one allreduce), then
        `close_epoch(totals)` at an epoch's end (every rank; rank 0 writes its history
        there), rank 0 writes the checkpoint, and a barrier. The BatchNorm statistics are
        equal on every rank before (the caller averaged or recomputed them): rank 0's copy,
        the one saved, stands for all ranks. Returns the checkpoint's path (rank 0; None on
        the others) and this rank's seconds in the barrier (waiting for rank 0's writes)."""
        p, w = self.parts, self.world
        self.check_weights_finite(*(at or ()))
        # The others restart from zero, so an epoch's metrics stay exact across a resume.
        totals = w.sum([v.numpy() for v in p.state.sums], name="ckpt_sums")
        for v, total in zip(p.state.sums, totals):
            v.assign(total if w.is_chief else 0.0)
        if close_epoch is not None:
            close_epoch(totals)
        path = p.checkpoints.save(int(p.state.global_step.numpy())) if w.is_chief else None
        t_barrier = time.perf_counter()
        w.barrier()
        return path, time.perf_counter() - t_barrier

    def save_in_epoch(self) -> str | None:
        """A checkpoint inside an epoch (every N steps, or on a stop); collective.
        Averaging BatchNorm statistics now and again at the epoch's end gives the same
        end-of-epoch values as averaging only there (the moving average is linear)."""
        self.sync_batchnorm()
        return self.save_checkpoint()[0]

    def diverged(self, what: str, epoch: int, step: int, lr: float):
        """The error that ends a diverged run (raised on every rank at the same point)."""
        checkpoints = self.parts.checkpoints
        kept = checkpoints.latest_path if checkpoints else "rank 0's newest"
        return diverged(what, epoch, step, lr, self.cfg.precision, kept)

    def check_weights_finite(self, epoch: int | None = None, step: int | None = None,
                             lr: float | None = None) -> None:
        """Before a checkpoint: a weight that is inf or NaN ends the run (every rank holds
        the same weights, so every rank raises)."""
        p = self.parts
        if variables_are_finite(p.model.variables):
            return
        state = p.state
        raise self.diverged(
            "a weight is not finite",
            int(state.epoch.numpy()) + 1 if epoch is None else epoch,
            int(state.step_in_epoch.numpy()) if step is None else step,
            p.schedule.at_step(int(state.global_step.numpy()), p.steps) if lr is None
            else lr)

    def dump_weights(self) -> None:
        if not self.cfg.dump_weights:
            return
        path = Path(self.cfg.dump_weights.format(rank=self.world.rank))
        arrays = {f"{i:03d}:{v.name}": v.numpy()
                  for i, v in enumerate(self.parts.model.variables)}
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def result(self, state: str) -> TrainResult:
        p = self.parts
        if p.curves:
            p.curves.close()  # the last curves.png is written when the run returns
        return TrainResult(state, int(p.state.epoch.numpy()),
                           int(p.state.step_in_epoch.numpy()),
                           int(p.state.global_step.numpy()), list(p.history),
                           self.world.rank, self.world.size)

    def preempt(self, stop: StopRequest) -> TrainResult:
        # nothing new since the restored (or last written) checkpoint, or nothing trained
        # at all yet: nothing is written (the path is the restored one, or None)
        path = self.save_in_epoch()
        reason = stop.reason
        state = self.parts.state
        self.info("stop requested (%s): checkpoint %s at epoch %d step %d; exit %d to requeue",
                  reason, path or "none (nothing trained yet)", int(state.epoch.numpy()) + 1,
                  int(state.step_in_epoch.numpy()), REQUEUE_EXIT_CODE)
        self.set_status(stop.state, checkpoint=path, reason=reason, exit_code=REQUEUE_EXIT_CODE)
        if self.world.is_chief and stop.stop_file is not None:
            stop.stop_file.unlink(missing_ok=True)  # consumed: the rerun must not stop again
        self.dump_weights()
        self.world.barrier()
        return self.result(stop.state)

    def release(self) -> None:
        """After a failure: stop the curve-drawing thread and close the TensorBoard writer
        now, quietly (on a full disk their last writes fail too; left to the interpreter's
        exit, TensorFlow's writer aborts the process instead of exiting with the error)."""
        if self.parts is None:
            return
        for close in (self.parts.curves, self.parts.tensorboard):
            if close is not None:
                with contextlib.suppress(Exception):
                    close.close()

    def record_failure(self, error: BaseException) -> None:
        """status.json says how the run ended when an exception ends it (rank 0, and only
        once this session has made RUN_DIR its own: a refused resume leaves it alone)."""
        if not (self.world.is_chief and self.prepared and self.counters is not None):
            return
        try:
            if isinstance(error, KeyboardInterrupt):
                self.set_status("stopped", reason="signal SIGINT again: stopped at once, "
                                "without a checkpoint", exit_code=130)
            else:
                line, code = run_state.failure_line(
                    error, self.run_dir, _RUN_FILES, lambda: _space_needed(self.cfg)) or (
                    one_line(error), error.exit_code if isinstance(error, UserError) else 1)
                run_state.write_status(self.reserve, lambda: self.set_status(
                    "failed", error=line, exit_code=code))
        except Exception as e:  # noqa: BLE001  (never hide the error being reported)
            log.warning("could not write %s: %s", self.run_dir / STATUS, e)

    # -- one epoch

    def run_epoch(self, epoch: int, stop: StopRequest) -> EpochOutcome | None:
        """Train the rest of `epoch`; returns what it measured, or None if the run must stop
        (preemption)."""
        cfg, w, p = self.cfg, self.world, self.parts
        state = p.state
        start = int(state.step_in_epoch.numpy())
        if start:
            self.info("epoch %d: resuming at step %d/%d", epoch + 1, start, p.steps)
        per_step_images = cfg.batch_size * w.size
        timed_steps, t_first, last_log = 0, None, time.monotonic()
        # input stall: time blocked waiting for the next batch (pipeline start-up and end
        # included) over the epoch's wall time
        waited = data.InputWait()
        # the pipeline started in the background during the previous epoch's end, else a
        # new one (the first epoch of a session, or one resumed in its middle)
        ahead, self.ahead = self.ahead, None
        batches = ahead[1] if ahead and ahead[0] == epoch and not start else \
            self.epoch_batches(epoch, start)
        t_begin = time.perf_counter()
        for batch in waited.timed(self.guarded(batches, "train")):
            global_step = int(state.global_step.numpy())
            lr = p.schedule.at_step(global_step, p.steps)
            p.optimizer.learning_rate.assign(lr)
            images, labels, *teacher_mass = batch  # (the mass with soft targets only)
            loss, stop_all, finite = p.train_step(images, labels,
                                                  tf.constant(stop.requested), *teacher_mass)
            if not bool(finite):  # every rank sees the same flag: all stop at this step
                raise self.diverged(f"the loss ({float(loss):.3g} on this rank's batch) or a "
                                    "gradient is not finite", epoch + 1,
                                    int(state.step_in_epoch.numpy()), lr)
            if t_first is None:  # the first step of a session includes tracing: not timed
                t_first = time.perf_counter()
            else:
                timed_steps += 1
            if cfg.checkpoint_every and (global_step + 1) % cfg.checkpoint_every == 0 \
                    and not bool(stop_all):
                self.save_in_epoch()
            if bool(stop_all):
                return None
            if w.is_chief and timed_steps and time.monotonic() - last_log >= cfg.log_every:
                last_log = time.monotonic()
                rate = timed_steps * per_step_images / max(time.perf_counter() - t_first, 1e-9)
                stall = 100 * waited.seconds / max(time.perf_counter() - t_begin, 1e-9)
                self._log_progress(epoch, int(state.step_in_epoch.numpy()), float(loss), lr,
                                   rate, stall)
        seconds = time.perf_counter() - t_begin
        input_stall = min(100.0, 100 * waited.seconds / max(seconds, 1e-9))
        if timed_steps:
            rate = timed_steps * per_step_images / max(time.perf_counter() - t_first, 1e-9)
        else:
            rate = (p.steps - start) * per_step_images / max(seconds, 1e-9)
        if epoch + 1 < cfg.epochs:  # the next epoch's pipeline starts while this one ends
            self.ahead = (epoch + 1, data.StartedInBackground(
                lambda: self.epoch_batches(epoch + 1, 0)))
        return EpochOutcome(seconds=seconds, images_per_s=rate, input_stall_pct=input_stall)

    def _log_progress(self, epoch, step, loss, lr, rate, stall) -> None:
        p = self.parts
        util = mfu(rate, p.flops, p.peak_total)
        self.info("epoch %d/%d step %d/%d loss %.4f lr %.3g | %.1f images/s%s | input stall "
                  "%.1f%%", epoch + 1, self.cfg.epochs, step, p.steps, loss, lr, rate,
                  f" | MFU {100 * util:.2f}%" if util is not None else "", stall)
        if p.tensorboard:
            p.tensorboard.step(int(p.state.global_step.numpy()), loss=loss, lr=lr,
                               images_per_s=rate)

    def end_epoch(self, epoch: int, outcome: EpochOutcome) -> None:
        w, p = self.world, self.parts
        state, manifest = p.state, p.manifest
        self.sync_batchnorm()
        # BatchNorm statistics of these weights, not the lagging moving averages (collective)
        precise_statistics(p.model, manifest, self.cfg, p.steps, epoch, w, p.data_threads,
                           self.guarded)
        val = self.validate()
        val_loss, val_acc = val.loss, val.accuracy
        lr = p.schedule.at_step(int(state.global_step.numpy()), p.steps)
        if p.has_val and absurd_val_loss(val_loss, manifest.num_classes):
            raise self.diverged(f"val_loss {val_loss:.3g} (a uniform guess scores "
                                f"{math.log(manifest.num_classes):.3g})", epoch + 1,
                                p.steps, lr)
        records: list[EpochRecord] = []  # (the row close_epoch makes, for the log below)
        _, waited = self.save_checkpoint(
            at=(epoch + 1, p.steps, lr),
            close_epoch=lambda totals: records.append(
                self._close_epoch(epoch, outcome, val, lr, totals)))
        record = self._record_rank0_wait(records[0], waited)
        util = f" | MFU {100 * record.mfu:.2f}%" if record.mfu is not None else ""
        waits = f" | rank 0's writes held the others {record.rank0_wait_s:.2f} s" \
            if record.rank0_wait_s is not None else ""
        kl = f" kl {record.kl:.4f}" if record.kl is not None else ""
        val_text = f"val_loss {val_loss:.4f} val_acc {val_acc:.4f}" if p.has_val else \
            "no val split"  # never "val_loss nan": there was nothing to validate on
        self.info("epoch %d/%d done: loss %.4f%s acc %.4f | %s | lr %.3g "
                  "| %.1f images/s%s | input stall %.1f%%%s", epoch + 1, self.cfg.epochs,
                  record.loss, kl, record.accuracy, val_text, lr, record.images_per_s,
                  util, record.input_stall_pct, waits)

    def _close_epoch(self, epoch: int, outcome: EpochOutcome, val: ValScores, lr: float,
                     totals: np.ndarray) -> EpochRecord:
        """Inside the epoch's checkpoint sequence: the epoch's row from the train sums of all
        ranks (`totals`); the counters move on, and rank 0 writes history first, checkpoint
        second: a kill in between redoes this epoch, and the rerun replaces its history
        row."""
        w, p = self.world, self.parts
        state = p.state
        loss_sum, correct, seen, *kl_sum = totals
        record = EpochRecord(
            epoch=epoch + 1, loss=loss_sum / max(seen, 1), accuracy=correct / max(seen, 1),
            val_loss=val.loss, val_accuracy=val.accuracy, lr=lr,
            images_per_s=outcome.images_per_s, seconds=outcome.seconds,
            mfu=mfu(outcome.images_per_s, p.flops, p.peak_total),
            input_stall_pct=outcome.input_stall_pct,
            kl=kl_sum[0] / max(seen, 1) if kl_sum else None, val_kl=val.kl,
            val_agreement=val.agreement)
        state.epoch.assign(epoch + 1)
        state.step_in_epoch.assign(0)
        state.reset_sums()
        improved = math.isfinite(val.loss) and val.loss < float(state.best_val_loss.numpy())
        if improved:
            state.best_val_loss.assign(val.loss)
        if w.is_chief:
            p.history.append(record)
            write_history(self.run_dir, p.history)
            p.curves.submit(p.history)  # drawn in the background: nobody waits for it
            p.tensorboard.epoch(record)
            if improved:
                p.checkpoints.save_best(int(state.global_step.numpy()), epoch + 1, val.loss)
        return record

    def _record_rank0_wait(self, record: EpochRecord, waited: float) -> EpochRecord:
        """`waited`: this rank's time in the barrier after rank 0's end-of-epoch writes. The
        mean over the other ranks (collective) goes into rank 0's history row."""
        w, p = self.world, self.parts
        if w.size == 1:
            return record
        total = w.sum([0.0 if w.is_chief else waited], name="rank0_wait")[0]
        record = dataclasses.replace(record, rank0_wait_s=total / (w.size - 1))
        if w.is_chief:  # the row was written before the wait was known: complete it
            p.history[-1] = record
            write_history(self.run_dir, p.history)
            p.tensorboard.epoch_scalars(record.epoch, rank0_wait_s=record.rank0_wait_s)
        return record

    def run(self) -> TrainResult:
        cfg, w, p, stop = self.cfg, self.world, self.parts, self.stop
        state = p.state
        if w.is_chief:
            stop.stop_file = self.run_dir / STOP_FILE
            if stop.discard_stale_stop_file():
                log.warning("removed a stale %s (older than this start)", stop.stop_file)
        self.info("training %s (%d ranks x batch %d, %d steps/epoch, %d epochs, %.3g FLOPs/image"
                  ", peak %s) in %s", cfg.arch, w.size, cfg.batch_size, p.steps, cfg.epochs,
                  p.flops, p.peak_source, self.run_dir)
        if p.resumed_from:
            self.info("resumed from %s: epoch %d, step %d, lr %.6g", p.resumed_from,
                      int(state.epoch.numpy()) + 1, int(state.step_in_epoch.numpy()),
                      p.schedule.at_step(int(state.global_step.numpy()), p.steps))
        if not p.has_val:
            log.warning("dataset %s has no val split (shard-records --val-fraction 0): "
                        "training without validation; no val_loss, no best checkpoint "
                        "(evaluate and export use the latest)", p.manifest.root)
        self.set_status("running")
        self.reserve = run_state.SpaceReserve(self.run_dir) if self.world.is_chief else None
        with stop:
            while True:
                # a request that came during start-up or validation (the epoch's checkpoint
                # is written), or in the last epoch: stop, never report "finished" then
                if w.sum([float(stop.requested)], name="stop_between_epochs")[0] > 0:
                    return self.preempt(stop)
                epoch = int(state.epoch.numpy())
                if epoch >= cfg.epochs:
                    break
                outcome = self.run_epoch(epoch, stop)
                if outcome is None:
                    return self.preempt(stop)
                self.end_epoch(epoch, outcome)
        self.set_status("finished", exit_code=0)
        self.dump_weights()
        if p.tensorboard:
            p.tensorboard.close()
        return self.result("finished")


def _build_model(cfg: TrainConfig, manifest: Manifest) -> tuple[
        tf.keras.Model, int, tf.keras.optimizers.Optimizer, OnlineTeacher | None, Objective,
        TrainState]:
    """The model (its FLOPs per image), optimizer, online teacher, objective and counters,
    freshly initialised (restored, or broadcast from rank 0, afterwards)."""
    model = cfg.model_config(manifest.num_classes).build(policy=PRECISIONS[cfg.precision])
    flops = flops_per_image(model)
    optimizer = make_optimizer(cfg)
    optimizer.build(model.trainable_variables)  # slots exist before restore
    # each rank loads its own copy of the frozen teacher (never in a checkpoint)
    teacher = load_online_teacher(cfg.teacher, manifest) if cfg.targets == "online" else None
    objective = Objective(
        cfg.targets, manifest.num_classes, cfg.temperature, cfg.mixup, cfg.seed,
        *((teacher.teacher, teacher.teacher_ids) if teacher else ()))
    state = TrainState(with_kl=objective.reports_kl)
    return model, flops, optimizer, teacher, objective, state


def _steps_per_epoch(cfg: TrainConfig, manifest: Manifest, world: World) -> int:
    """--steps-per-epoch, or one pass over the train split; at least 1 (else a UserError)."""
    steps = cfg.steps_per_epoch or data.steps_per_epoch(manifest, "train", cfg.batch_size,
                                                        world.size)
    if steps < 1:
        raise UserError(
            f"the train split ({manifest.split('train').count} examples) is too small "
            f"for --batch-size {cfg.batch_size} on {world.size} rank(s): lower --batch-size")
    return steps


_RUN_FILES = "the run's checkpoints and files"  # what a disk error names


@disk_errors.reports(_RUN_FILES, lambda a: a["cfg"].run_dir,
                     lambda a: _space_needed(a["cfg"]))
def train(cfg: TrainConfig, stop: StopRequest | None = None) -> TrainResult:
    """Train (or resume) the run in `cfg.run_dir`. Rank 0 alone writes files.

    `stop`: the command's stop request, installed as early as possible so that a signal
    during start-up is not lost (by default the trainer makes and installs its own)."""
    cfg.check()
    folder_lock.check_apart("RUN_DIR", cfg.run_dir, "DATASET_DIR", cfg.dataset)
    world = init_world(cfg.engine, stop_reason=(
        lambda: stop.reason if stop.requested else None) if stop else None)
    cfg, precision = resolve_precision(cfg, world)  # --precision auto: once, rank 0's choice
    trainer = _Trainer(cfg, world, stop, precision.why)
    trainer.info("precision %s", precision.line())
    try:
        with trainer.stop:  # (already installed by the command: then this is a no-op)
            trainer.setup()
            return trainer.run()
    except BaseException as e:
        error = peer_loss.as_peer_lost(e, world.rank, world.size) or e  # a peer gone: one line
        trainer.record_failure(error)
        trainer.release()
        raise error from (e if error is not e else e.__cause__)
    finally:
        if trainer.reserve:
            trainer.reserve.drop()
        if trainer.lock:
            trainer.lock.release()
