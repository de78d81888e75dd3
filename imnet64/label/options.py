"""The options of `imnet64 label`, their defaults defined once (the CLI reads them from here).

No TensorFlow, no image libraries: `imnet64 label --help` imports this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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

    def check(self, num_classes: int) -> None:
        """What can only be checked once the teacher (its number of classes) is known."""
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if not 1 <= self.top_k <= num_classes:
            raise UserError(f"--top-k must be in 1..{num_classes} (got {self.top_k})")
