"""A training run's options, their defaults and choice lists (and evaluate's and export's),
defined once and without TensorFlow: the CLI reads them for its options and help before
TensorFlow loads, the trainer runs on a TrainConfig once `TrainConfig.check` accepted each
option, and `to_argv` turns one back into the command line the ranks started under
horovodrun parse (the CLI's self-launch and the demo)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from imnet64.cluster.engines import importable_engines
from imnet64.cluster.precision import AUTO
from imnet64.cluster.preemption import parse_signal
from imnet64.errors import UserError
from imnet64.formats.image64 import SIZE
from imnet64.train.model_config import ARCHS, ModelConfig
from imnet64.train.schedule import Schedule

# --targets: what the student learns from (imnet64.train.targets says what each one is)
TARGETS = ("hard", "soft", "online")

# --precision -> the Keras mixed-precision policy (None: float32)
PRECISIONS = {"fp32": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
# what --precision accepts: auto is resolved once, at the start of a run, to one of PRECISIONS
# (bf16 where the hardware has fast bf16, else fp32: imnet64.cluster.precision) and recorded
# in config.json; a resume with auto keeps the recorded choice
PRECISION_CHOICES = (AUTO, *PRECISIONS)

# imnet64 evaluate and export
CHECKPOINT = "best"  # or "latest", or a checkpoint path
EVAL_SPLIT = "val"
EVAL_BATCH_SIZE = 256
TOP_CONFUSED = 10  # most confused class pairs listed
PER_CLASS_SHOWN = 20  # evaluate's table lists every class up to this many, else the worst
EXPORT_FORMATS = ("savedmodel", "keras")

# BatchNorm statistics recomputed on this many train batches per rank before each validation
# (imnet64.train.precise_bn; capped at the epoch's steps; 0: the moving averages, as before
# 0.2). evaluate/export --precise-bn-batches: 0, the checkpoint's statistics (train's).
PRECISE_BN_BATCHES = 32


@dataclass(frozen=True)
class TrainConfig:
    run_dir: str
    dataset: str
    arch: str = ModelConfig.arch
    repeats: tuple[int, ...] = ModelConfig.repeats
    widths: tuple[int, ...] = ModelConfig.widths
    recompute: bool = ModelConfig.recompute
    epochs: int = int(Schedule.warmup_epochs + Schedule.final_epochs)
    warmup_epochs: float = Schedule.warmup_epochs
    batch_size: int = 32  # per rank
    lr_max: float = Schedule.lr_max  # before scaling with the number of ranks
    init_scale: float = Schedule.init_scale
    final_scale: float = Schedule.final_scale
    lr_scaling: bool = True
    steps_per_epoch: int | None = None  # default: one pass over the train split
    precision: str = AUTO
    # horovod where it is installed (the pinned stack), else tf (the current stack)
    engine: str = importable_engines()[0]
    xla: bool = False
    seed: int = 0
    # soft: bench/distill.py measured it closer to the teacher than hard (held-out and val KL,
    # held-out agreement, both seeds) at the same val top-1; a dataset without stored
    # probabilities (class folders) gives one-hot targets, the same as hard
    targets: str = "soft"
    temperature: float = 1.0  # of the soft and online targets and the student's softmax
    mixup: float = 0.0  # alpha of Beta(alpha, alpha); 0: no mixup
    teacher: str | None = None  # online targets: default the teacher that labeled the dataset
    augment: bool = False
    shuffle: bool = True
    precise_bn_batches: int = PRECISE_BN_BATCHES
    keep_checkpoints: int = 3
    checkpoint_every: int = 0  # also checkpoint every N steps (0: per epoch only)
    signal: str = "USR1"
    peak_flops: float | None = None  # per rank; default: an estimate (peak_flops.py)
    log_every: float = 30.0  # seconds between progress lines
    restart_if_damaged: bool = False  # no checkpoint restores: start over instead of an error
    dump_weights: str | None = field(default=None, compare=False)  # "path-{rank}.npz"

    def model_config(self, num_classes: int) -> ModelConfig:
        return ModelConfig(num_classes, self.arch, self.repeats, self.widths, self.recompute,
                           image_size=SIZE)

    def check(self) -> None:
        """Every option on its own, before anything starts; each message names the option
        that fixes it (a UserError)."""
        cfg = self

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(message)

        need(cfg.precision in PRECISION_CHOICES,
             f"--precision must be one of {', '.join(PRECISION_CHOICES)} (got {cfg.precision!r})")
        need(cfg.epochs >= 1, f"--epochs must be at least 1 (got {cfg.epochs})")
        need(cfg.batch_size >= 1, f"--batch-size must be at least 1 (got {cfg.batch_size})")
        need(0 <= cfg.warmup_epochs < cfg.epochs,
             f"--warmup-epochs ({cfg.warmup_epochs:g}) must be at least 0 and less than --epochs "
             f"({cfg.epochs}): lower --warmup-epochs or raise --epochs")
        need(cfg.steps_per_epoch is None or cfg.steps_per_epoch >= 1,
             f"--steps-per-epoch must be at least 1 (got {cfg.steps_per_epoch})")
        need(cfg.lr_max > 0 and math.isfinite(cfg.lr_max),
             f"--lr-max must be a number above 0 (got {cfg.lr_max:g})")
        need(cfg.init_scale >= 0 and math.isfinite(cfg.init_scale),
             f"--lr-init-scale must be 0 or more (got {cfg.init_scale:g})")
        need(cfg.final_scale >= 0 and math.isfinite(cfg.final_scale),
             f"--lr-final-scale must be 0 or more (got {cfg.final_scale:g})")
        need(cfg.keep_checkpoints >= 1,
             f"--keep-checkpoints must be at least 1 (got {cfg.keep_checkpoints})")
        need(cfg.checkpoint_every >= 0,
             f"--checkpoint-every must be 0 (per epoch only) or more (got {cfg.checkpoint_every})")
        need(cfg.log_every >= 0, f"--log-every must be 0 or more seconds (got {cfg.log_every:g})")
        need(cfg.peak_flops is None or cfg.peak_flops > 0,
             f"--peak-flops must be above 0 (got {cfg.peak_flops})")
        need(cfg.targets in TARGETS,
             f"--targets must be one of {', '.join(TARGETS)} (got {cfg.targets!r})")
        need(cfg.temperature > 0 and math.isfinite(cfg.temperature),
             f"--temperature must be a number above 0 (got {cfg.temperature:g})")
        need(cfg.targets != "hard" or cfg.temperature == 1,
             f"--temperature {cfg.temperature:g} needs --targets soft or online (hard labels "
             "have no temperature)")
        need(cfg.mixup >= 0 and math.isfinite(cfg.mixup),
             f"--mixup must be 0 (off) or an alpha above 0 (got {cfg.mixup:g})")
        need(cfg.teacher is None or cfg.targets == "online",
             "--teacher is the online teacher: it needs --targets online")
        need(cfg.arch in ARCHS, f"--arch must be one of {', '.join(ARCHS)} (got {cfg.arch!r})")
        need(len(cfg.repeats) == len(cfg.widths) and len(cfg.repeats) > 0,
             f"--repeats and --widths need the same number of levels (got {len(cfg.repeats)} "
             f"and {len(cfg.widths)})")
        need(min(cfg.repeats) >= 1, f"--repeats must be at least 1 per level (got {cfg.repeats})")
        need(min(cfg.widths) >= 1, f"--widths must be at least 1 per level (got {cfg.widths})")
        try:
            parse_signal(cfg.signal)
        except UserError as e:
            raise UserError(f"--signal: {e}") from None

    def to_argv(self) -> list[str]:
        """`imnet64 train`'s arguments for this config: DATASET_DIR RUN_DIR, then every option
        that is set (a rank parses them back into an equal TrainConfig)."""
        argv = [self.dataset, self.run_dir]
        for f in fields(self):
            if f.name in ("dataset", "run_dir"):
                continue
            argv += _option_argv(OPTIONS[f.name], getattr(self, f.name))
        return argv


# TrainConfig field -> `imnet64 train` option; a bool is a flag: "--on" alone, or "--on/--off"
OPTIONS = {
    "arch": "--arch", "repeats": "--repeats", "widths": "--widths", "recompute": "--recompute",
    "epochs": "--epochs", "warmup_epochs": "--warmup-epochs", "batch_size": "--batch-size",
    "lr_max": "--lr-max", "init_scale": "--lr-init-scale", "final_scale": "--lr-final-scale",
    "lr_scaling": "--lr-scaling/--no-lr-scaling", "steps_per_epoch": "--steps-per-epoch",
    "precision": "--precision", "engine": "--engine", "xla": "--xla", "seed": "--seed",
    "targets": "--targets", "temperature": "--temperature", "mixup": "--mixup",
    "teacher": "--teacher",
    "augment": "--augment/--no-augment", "shuffle": "--shuffle/--no-shuffle",
    "precise_bn_batches": "--precise-bn-batches",
    "keep_checkpoints": "--keep-checkpoints", "checkpoint_every": "--checkpoint-every",
    "signal": "--signal", "peak_flops": "--peak-flops", "log_every": "--log-every",
    "restart_if_damaged": "--restart-if-damaged", "dump_weights": "--dump-weights",
}


def option_name(field_name: str) -> str:
    """The option a user changes to change this field (for error messages)."""
    return OPTIONS[field_name].split("/")[0]


def _option_argv(option: str, value) -> list[str]:
    if isinstance(value, bool):
        on, _, off = option.partition("/")
        return [on] if value else [off] if off else []
    if value is None:
        return []
    if isinstance(value, tuple):
        return [option, ",".join(map(str, value))]
    return [option, str(value)]
