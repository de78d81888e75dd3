"""How many local ranks `imnet64 train --np N` may start on this machine.

One typo (`--np 1000` for `--np 10`) on a 2-core login node started 1000 ranks of about half a
gigabyte each: the load passed 100 within a minute (issue 24). So N is checked first against
what the machine can hold, and more needs `--oversubscribe` (Open MPI's name for the same
decision):
- GPUs: one rank per visible GPU (a rank uses one; more would share it);
- without GPUs, cores: one rank per CPU this process may run on (each rank's step is
  compute-bound, and TensorFlow runs its own thread pools inside it);
- memory: N x RANK_RSS_BYTES must fit in the machine's memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from imnet64.errors import UserError

# One rank's peak resident memory, measured by bench/rank_memory.py (`train --np 2`, the
# default model and batch size, 6 steps) on an AMD EPYC (family 25 model 17), 2 cores,
# TensorFlow 2.18.1, 2026-12-04, with other users loading the cores (load average 25):
# 962 and 981 MiB per Horovod rank, 912 and 948 MiB per tf.distribute rank (horovodrun
# itself 534 MiB, the launcher 38). Rounded up to 1 GiB; a wider model or batch needs more.
RANK_RSS_BYTES = 1 << 30
OVERSUBSCRIBE_FLAG = "--oversubscribe"


@dataclass(frozen=True)
class Capacity:
    """What this machine offers local ranks."""

    cores: int
    gpus: int
    memory_bytes: int

    def by_memory(self) -> int:
        return self.memory_bytes // RANK_RSS_BYTES

    def max_ranks(self) -> int:
        return max(1, min(self.gpus or self.cores, self.by_memory()))

    def describe(self) -> str:
        devices = f"{self.gpus} GPU(s), one rank each" if self.gpus else \
            f"{self.cores} core(s) and no GPU, one rank per core"
        return (f"{devices}; {self.memory_bytes / 2**30:.1f} GiB of memory at "
                f"~{RANK_RSS_BYTES / 2**30:g} GiB per rank: {self.by_memory()}")


def this_machine(gpus: int) -> Capacity:
    """The cores this process may run on, the `gpus` visible to it, the physical memory."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    return Capacity(cores, gpus, memory or RANK_RSS_BYTES * cores)


def check_local_ranks(ranks: int, capacity: Capacity, oversubscribe: bool = False,
                      option: str = "--np") -> int:
    """`ranks` if this machine holds them (or `oversubscribe`), else a one-line error."""
    limit = capacity.max_ranks()
    if ranks <= limit or oversubscribe:
        return ranks
    raise UserError(f"{option} {ranks}: this machine holds at most {limit} rank(s) "
                    f"({capacity.describe()}); more would swamp it. Pass {OVERSUBSCRIBE_FLAG} "
                    "to start them anyway")
