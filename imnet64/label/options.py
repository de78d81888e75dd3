"""The options of `imnet64 label`, their defaults defined once (the CLI reads them from here),
and what a missing option is taken from in the environment (Slurm, $IMNET64_TEACHER).

No TensorFlow, no image libraries: `imnet64 label --help` imports this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from imnet64.cluster.environment import Environment, ShardSlot
from imnet64.cluster.precision import AUTO
from imnet64.errors import UserError

DEFAULT_BATCH_SIZE = 64
DEFAULT_TOP_K = 5
# Threads reading + decoding files. Decoding a 64x64 PNG takes ~0.1 ms; the threads are
# there to hide file-system latency (Lustre/GPFS opens take milliseconds).
DEFAULT_READ_THREADS = 4
MAX_READ_THREADS = 64
# Bytes the reading threads may hold at once: files being read plus images being decoded
# (batch_reader.ByteBudget). Without it, peak memory grew with near-limit images (64 MB
# files, 64 Mpx images: ~0.8 GB per decode) times --read-threads; an input larger than
# the budget is read while the others wait.
DEFAULT_READ_BUDGET = 256 * 2**20
# The teacher's compute precision (the stored probabilities are float32 either way): auto is
# bf16 where the CPU has fast bf16 and oneDNN is on (imnet64.cluster.precision), else fp32.
PRECISIONS = (AUTO, "fp32", "bf16")
# fp32 by measurement (bench/precision.py, README "Precision"): bf16 took ~1.8x less CPU per
# image here but changed the teacher's top-1 on 7-8 % of 64x64 crops (max |dp| ~0.2)
DEFAULT_PRECISION = "fp32"


@dataclass(frozen=True)
class LabelOptions:
    """How one shard is labeled and what else is made of it (like records' ShardOptions).

    `teacher_spec` None means the teacher package's default, resolved only when the shard
    has work to do (so a skipped shard never imports TensorFlow).
    """

    teacher_spec: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    top_k: int = DEFAULT_TOP_K
    read_threads: int = DEFAULT_READ_THREADS
    read_budget: int = DEFAULT_READ_BUDGET
    force: bool = False  # relabel a shard whose summary exists
    export_dir: str | os.PathLike | None = None  # also lay out DIR/<class>/<file>
    copy: bool = False  # with export_dir: copy instead of linking
    precision: str = DEFAULT_PRECISION  # the teacher's compute precision (PRECISIONS)

    def check(self, num_classes: int) -> None:
        """What can only be checked once the teacher (its number of classes) is known."""
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)} "
                            f"(got {self.precision!r})")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if not 1 <= self.top_k <= num_classes:
            raise UserError(f"--top-k must be in 1..{num_classes} (got {self.top_k})")


def teacher_spec_or_default(option: str | None, environment: Environment) -> str | None:
    """--teacher, else $IMNET64_TEACHER, else None (the teacher package's default, resolved
    only if needed, so a skipped shard or a bad option never imports TensorFlow)."""
    return option or environment.teacher


def shard_of(index: int | None, count: int | None, environment: Environment) -> ShardSlot:
    """This process's shard from --shard-index/--num-shards, a missing one completed from
    Slurm's variables (else 0 of 1); a number out of range, from either source, is a
    one-line error naming where it came from."""
    if count is not None and count < 1:
        raise UserError(f"--num-shards must be at least 1 (got {count})")
    given = ", ".join(f"--{name} {value}" for name, value in
                      (("shard-index", index), ("num-shards", count)) if value is not None)
    used = environment.shard_variables() if index is None or count is None else {}
    slurm = "from " + ", ".join(f"{k}={v}" for k, v in used.items()) if used else ""
    origin = "; ".join(part for part in (given, slurm) if part)
    try:
        if index is None or count is None:
            from_slurm = environment.slurm.shard_slot()
            index = from_slurm.index if index is None else index
            count = from_slurm.count if count is None else count
        return ShardSlot(index, count, "options")
    except ValueError as e:
        raise UserError(f"{e} ({origin})" if origin else str(e)) from None
