"""A RUN_DIR as a whole: what its config.json says of a run (`resolved_config`), whether a
restart in it resumes the same run (`prepare_run_dir`: same options, same dataset, or refused),
and reading a finished (or running) run back: its config, class names and trained model."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import imnet64
from imnet64 import atomic
from imnet64.cluster import provenance
from imnet64.cluster.world import World
from imnet64.errors import UserError
from imnet64.formats import provenance as provenance_schema
from imnet64.formats.manifest import Manifest
from imnet64.train import run_files
from imnet64.train.checkpoints import find_checkpoint, one_line
from imnet64.train.config import CHECKPOINT, OPTIONS, TrainConfig, option_name
from imnet64.train.history import EpochRecord
from imnet64.train.online_teacher import OnlineTeacher
from imnet64.train.run_files import CLASSES, CONFIG, STATUS  # noqa: F401  (their home for callers)
from imnet64.train.schedule import Schedule

import tensorflow as tf

log = logging.getLogger(__name__)

# These decide what training computes; a resume with other values would not continue the
# same run (different schedule, batches or model), so it is refused.
RESUME_MUST_MATCH = (
    "arch", "repeats", "widths", "recompute", "epochs", "warmup_epochs", "batch_size",
    "lr_max", "init_scale", "final_scale", "lr_scaling", "precision", "seed", "augment",
    "shuffle", "world_size", "steps_per_epoch", "num_classes", "targets", "temperature",
    "mixup", "online_teacher_sha256",
)
# what a config.json written before distillation existed means by its missing keys
MISSING_MEANS = {"targets": "hard", "temperature": 1.0, "mixup": 0.0,
                 "online_teacher_sha256": None}
# config.json key -> what the user changes to fix a difference (error messages)
OPTION_NAMES = {
    **{key: option_name(key) for key in RESUME_MUST_MATCH if key in OPTIONS},
    "world_size": "number of ranks (--np)", "num_classes": "classes of the dataset",
    "online_teacher_sha256": "the online teacher's weights (--teacher)",
}


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


# ---- a run started or resumed in RUN_DIR ---------------------------------------------------


def resolved_config(cfg: TrainConfig, manifest: Manifest, world: World, steps: int,
              schedule: Schedule, flops: int, teacher: OnlineTeacher | None) -> dict:
    """The run's config.json: the options, plus everything derived from them."""
    d = asdict(cfg)
    d.pop("dump_weights")
    d.pop("teacher")  # recorded as the teacher it resolved to (online_teacher)
    d.pop("restart_if_damaged")  # what this session does on damage, not what the run is
    d.update(
        repeats=list(cfg.repeats), widths=list(cfg.widths),
        dataset=str(Path(cfg.dataset).resolve()),
        dataset_fingerprint=manifest.fingerprint,
        num_classes=manifest.num_classes,
        train_examples=manifest.split("train").count,
        world_size=world.size,
        steps_per_epoch=steps,
        global_batch_size=cfg.batch_size * world.size,
        lr_scale=world.size if cfg.lr_scaling else 1,
        schedule=schedule.to_json(),
        flops_per_image=flops,
        # --targets online: the frozen teacher in the step (not in checkpoints)
        online_teacher=teacher.to_json() if teacher else None,
        online_teacher_sha256=teacher.sha256 if teacher else None,
        model=cfg.model_config(manifest.num_classes).to_json(),
        versions={"imnet64": imnet64.__version__, "tensorflow": tf.__version__},
        # this session's code, host and job, and the teacher that labeled the dataset
        provenance=provenance.collect(**provenance_schema.teacher_fields(manifest.raw)),
    )
    return d


def _other_dataset(run_dir: Path, old: dict, resolved: dict,
                   class_names: list[str]) -> str | None:
    """Why a resumed run's dataset is not the one it was trained on (None if it is): other
    class names (class ids would change meaning under the trained head) or other shards
    (another dataset's fingerprint). A moved or copied dataset is the same dataset."""
    old_names = run_files.read_classes(run_dir, old["num_classes"])
    if old_names is not None and list(old_names) != list(class_names):
        first = next((i for i, (a, b) in enumerate(zip(old_names, class_names)) if a != b),
                     min(len(old_names), len(class_names)))
        a = old_names[first] if first < len(old_names) else None
        b = class_names[first] if first < len(class_names) else None
        return (f"{run_dir} was trained on other class names than dataset "
                f"{resolved['dataset']} has (class {first}: {a!r} -> {b!r}): resume with the "
                f"dataset it started with ({old.get('dataset')}), or use a new RUN_DIR")
    fingerprint = old.get("dataset_fingerprint")
    if fingerprint and fingerprint != resolved["dataset_fingerprint"]:
        return (f"{run_dir} was trained on another dataset ({old.get('dataset')}, fingerprint "
                f"{fingerprint[:12]}) than {resolved['dataset']} (fingerprint "
                f"{resolved['dataset_fingerprint'][:12]}): the same class names but other "
                "shards; resume with the dataset it started with, or use a new RUN_DIR")
    if old.get("dataset") != resolved["dataset"]:
        log.info("resuming with dataset %s: the same dataset as %s (same fingerprint)"
                 if fingerprint else "resuming with dataset %s (the run started with %s)",
                 resolved["dataset"], old.get("dataset"))
    return None


def prepare_run_dir(run_dir: Path, resolved: dict, class_names: list[str]) -> str | None:
    """Rank 0: write config.json for a new run, or check that a resumed run is the same run
    (its RESUME_MUST_MATCH values and its dataset). Returns an error message (to be raised
    on every rank) or None."""
    try:  # a damaged file of the run: one line naming it, nothing changed
        run_files.check_layout(run_dir)
        old = run_files.read_config(run_dir) if (run_dir / CONFIG).exists() else None
        run_files.read_history_rows(run_dir, EpochRecord)
        other = _other_dataset(run_dir, old, resolved, class_names) if old else None
    except UserError as e:
        return str(e)
    path = run_dir / CONFIG
    if old is not None:
        diffs = [f"{OPTION_NAMES.get(k, k)} {old.get(k, MISSING_MEANS.get(k))!r} -> "
                 f"{resolved[k]!r}"
                 for k in RESUME_MUST_MATCH if old.get(k, MISSING_MEANS.get(k)) != resolved[k]]
        if diffs:
            return (f"{run_dir} holds a run made with other options ({'; '.join(diffs)}): "
                    "rerun with the same options to resume, or use a new RUN_DIR")
        if other:
            return other
    run_dir.mkdir(parents=True, exist_ok=True)
    for leftover in run_files.remove_temporaries(run_dir):
        log.info("removed %s (left by an interrupted session)", leftover)
    atomic.write_json(path, resolved)
    atomic.write_json(run_dir / CLASSES, class_names)
    return None
