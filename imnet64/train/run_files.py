"""The files of a RUN_DIR, their typed contracts and their one reader each (no TensorFlow).

Writers: imnet64.train.run_dir (config.json, classes.json), imnet64.train.loop (status.json),
imnet64.train.history (history.json, curves.png), imnet64.train.checkpoints (checkpoints/,
best/best.json). Every read goes through here and imnet64.formats.read_back: a damaged file
is one `error:` line naming it and what is wrong (and, where the file can be made again,
how), never a traceback, and nothing is changed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imnet64 import atomic
from imnet64.errors import UserError
from imnet64.formats import read_back
from imnet64.formats.image64 import SIZE
from imnet64.train.model_config import ModelConfig

CONFIG = "config.json"
CLASSES = "classes.json"
STATUS = "status.json"  # what the run is doing or how it ended (imnet64.train.loop)
HISTORY = "history.json"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
BEST = "best"
DAMAGED = "damaged"
BEST_RECORD = "best.json"
STATE_FILE = "checkpoint"  # TensorFlow's name for a folder's checkpoint state file

# what a resume or an evaluation cannot do without; config.json is made by `train` only
_CONFIG_REBUILD = ("it is written when a run starts and cannot be rebuilt: restore it from "
                   "a copy, or train into a new RUN_DIR")


@dataclass(frozen=True)
class ConfigContract:
    """The fields of config.json that readers rely on (train's resume check, evaluate,
    export); the writer (imnet64.train.run_dir.resolved_config) writes these and more."""

    model: dict[str, Any]
    num_classes: int
    dataset: str
    dataset_fingerprint: str | None = None


@dataclass(frozen=True)
class ModelContract:
    """config.json's "model" (ModelConfig.to_json)."""

    num_classes: int
    arch: str
    repeats: list[int]
    widths: list[int]
    recompute: bool = False


@dataclass(frozen=True)
class BestRecord:
    """checkpoints/best/best.json (Checkpoints.save_best)."""

    checkpoint: str
    epoch: int
    val_loss: float


@dataclass(frozen=True)
class StatusRecord:
    """status.json (Trainer.set_status): the fields every state has; more (checkpoint,
    reason, error, exit_code) depending on the state; host and pid of its writer (since
    issue 24's round 3: absent in older files)."""

    state: str
    epoch: int
    step_in_epoch: int
    global_step: int
    epochs: int
    steps_per_epoch: int
    time: float
    error: str | None = None
    reason: str | None = None
    host: str | None = None
    pid: int | None = None


def read_config(run_dir: str | Path) -> dict:
    """RUN_DIR/config.json, checked (UserError if RUN_DIR is not a run or the file is
    damaged). The whole dict, as written."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    read_back.require_folder(run_dir, "a run folder")
    if not path.exists():
        raise UserError(f"{run_dir} is not a training run (no {CONFIG}; run imnet64 train)")
    config = read_back.read_checked(path, ConfigContract, _CONFIG_REBUILD)
    try:
        read_back.check(config["model"], ModelContract, "model")
        ModelConfig.from_json(config["model"], image_size=SIZE)
    except (read_back.Mismatch, ValueError) as e:
        raise read_back.damaged(path, str(e), _CONFIG_REBUILD) from None
    if config["model"]["num_classes"] != config["num_classes"]:
        raise read_back.damaged(path, f"model.num_classes {config['model']['num_classes']} "
                                f"is not num_classes {config['num_classes']}", _CONFIG_REBUILD)
    return config


def read_classes(run_dir: str | Path, num_classes: int | None = None) -> list[str] | None:
    """RUN_DIR/classes.json (None if absent), checked: a list of `num_classes` strings."""
    path = Path(run_dir) / CLASSES
    if not path.exists() and not path.is_symlink():
        return None
    rebuild = ("it is the dataset's class list: copy it from the dataset's dataset.json, "
               "or move it away and resume to have it written again")
    names = read_back.read_checked(path, list[str], rebuild)
    if num_classes is not None and len(names) != num_classes:
        raise read_back.damaged(path, f"{len(names)} class names for a run of {num_classes} "
                                "classes", rebuild)
    return names


HISTORY_REBUILD = ("move it away and resume: training goes on from the checkpoints and "
                   "history.json starts again from the epochs trained from then on")


def read_history_rows(run_dir: str | Path, record_type: type) -> list:
    """RUN_DIR/history.json's epochs as `record_type` (imnet64.train.history.EpochRecord);
    [] if absent. Metrics a non-finite value made null come back as NaN."""
    path = Path(run_dir) / HISTORY
    if not path.exists() and not path.is_symlink():
        return []
    data = read_back.read_checked(path, dict[str, Any], HISTORY_REBUILD)
    if "epochs" not in data:
        raise read_back.damaged(path, "epochs is missing", HISTORY_REBUILD)
    rows = data["epochs"]
    if not isinstance(rows, list):
        raise read_back.damaged(path, "epochs should be a list", HISTORY_REBUILD)
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(read_back.build(record_type, row, f"epochs[{i}]", null_float=True))
        except read_back.Mismatch as e:
            raise read_back.damaged(path, str(e), HISTORY_REBUILD) from None
    return out


def read_status(run_dir: str | Path) -> StatusRecord | None:
    """RUN_DIR/status.json (None if absent), checked."""
    path = Path(run_dir) / STATUS
    if not path.exists() and not path.is_symlink():
        return None
    return read_back.read_dataclass(
        path, StatusRecord, "it is rewritten by the next `imnet64 train` of this RUN_DIR")


def read_best(best_dir: str | Path) -> BestRecord | None:
    """checkpoints/best/best.json (None if absent), checked."""
    path = Path(best_dir) / BEST_RECORD
    if not path.exists() and not path.is_symlink():
        return None
    return read_back.read_dataclass(
        path, BestRecord, "move it away to use the newest checkpoint in "
        f"{Path(best_dir).name}/ (the next best epoch writes it again), or evaluate with "
        "--checkpoint latest")


# folders and files a run keeps, relative to RUN_DIR: a file where a folder belongs (or the
# reverse) would otherwise fail deep inside a writer
_FOLDERS = (CHECKPOINTS, f"{CHECKPOINTS}/{BEST}", f"{CHECKPOINTS}/{DAMAGED}", TENSORBOARD)
_FILES = (CONFIG, CLASSES, STATUS, HISTORY, CURVES, f"{CHECKPOINTS}/{STATE_FILE}",
          f"{CHECKPOINTS}/{BEST}/{STATE_FILE}", f"{CHECKPOINTS}/{BEST}/{BEST_RECORD}")


def check_layout(run_dir: str | Path) -> None:
    """UserError naming the first path of RUN_DIR's layout that has the wrong kind (a file
    where a folder belongs or the reverse); nothing is changed."""
    run_dir = Path(run_dir)
    read_back.require_folder(run_dir, "a run folder")
    for name in _FOLDERS:
        read_back.require_folder(run_dir / name)
    for name in _FILES:
        read_back.require_file_or_absent(run_dir / name)
    damaged = run_dir / CHECKPOINTS / DAMAGED
    if damaged.is_dir():
        for entry in damaged.iterdir():  # set-aside checkpoints are folders (ckpt-N[.k])
            if entry.name.split(".")[0].removeprefix("best-").startswith("ckpt-"):
                read_back.require_folder(entry, "a folder of set-aside checkpoint files")
    for folder in (run_dir / CHECKPOINTS, run_dir / CHECKPOINTS / BEST):
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.startswith("ckpt-") and not entry.name.endswith("_temp"):
                    read_back.require_file_or_absent(entry)


# TensorFlow's checkpoint writer saves into <prefix>_temp/ and renames into place: a kill
# mid-save (of the regular or the best checkpoint) leaves that folder behind
_TF_SAVE_TEMP = re.compile(r"^ckpt-\d+_temp$")
# the files a run writes through imnet64.atomic (temporaries ".<name>.<8 chars>.tmp")
_ATOMIC = {"": (CONFIG, CLASSES, STATUS, HISTORY, CURVES),
           CHECKPOINTS: (STATE_FILE,), f"{CHECKPOINTS}/{BEST}": (STATE_FILE, BEST_RECORD)}


def leftover_temporaries(run_dir: str | Path) -> list[Path]:
    """What a killed (or disk-full) session of this run left half-written: the atomic
    temporaries of the run's own files and TensorFlow's ckpt-N_temp/ save folders, found by
    their exact name patterns only (nothing else in RUN_DIR is ever touched)."""
    run_dir = Path(run_dir)
    found = []
    for rel, names in _ATOMIC.items():
        folder = run_dir / rel
        if not folder.is_dir():
            continue
        found += [entry for entry in folder.iterdir() if not entry.is_symlink() and (
            (_ours(atomic.temp_target(entry.name), names, rel) and entry.is_file())
            or (rel != "" and _TF_SAVE_TEMP.match(entry.name) and entry.is_dir()))]
    return sorted(found)


def _ours(target: str | None, names: tuple[str, ...], rel: str) -> bool:
    """`target` (what an atomic temporary was to become) is a file this run writes there."""
    if target is None:
        return False
    return target in names or (rel == "" and target.startswith("evaluation-")
                               and target.endswith(".json"))


def remove_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove `leftover_temporaries` (call only while no other process writes RUN_DIR)."""
    removed = leftover_temporaries(run_dir)
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return removed


def checkpoint_bytes(run_dir: str | Path) -> int | None:
    """The size of the run's newest checkpoint (its .index and .data files, or a save
    folder TensorFlow left half-written), None if it has none yet: what one more checkpoint
    needs on disk."""
    sizes: dict[str, int] = {}
    for folder in (Path(run_dir) / CHECKPOINTS, Path(run_dir) / CHECKPOINTS / BEST):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            m = re.match(r"^(ckpt-\d+)(?:\.index|\.data-\d+-of-\d+)$", entry.name)
            if m and entry.is_file():
                sizes[m.group(1)] = sizes.get(m.group(1), 0) + entry.stat().st_size
    if not sizes:
        return None
    return sizes[max(sizes, key=lambda name: int(name.split("-")[1].split("_")[0]))]


def model_config(config: dict) -> ModelConfig:
    """The run's ModelConfig from a config read by `read_config`."""
    return ModelConfig.from_json(config["model"], image_size=SIZE)

