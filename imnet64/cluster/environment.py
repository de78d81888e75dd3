"""Who am I: Slurm array task / rank facts, read in exactly one place.

Command-line options override these; without Slurm everything defaults to one process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


@dataclass(frozen=True)
class ShardSlot:
    """Which part of a sharded job this process does."""

    index: int
    count: int
    source: str  # where the numbers came from, for logs

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard count {self.count} is not at least 1")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in 0..{self.count - 1}")


def shard_slot(
    index: int | None = None,
    count: int | None = None,
    env: Mapping[str, str] | None = None,
) -> ShardSlot:
    """Shard index/count: options, else Slurm array task, else Slurm rank, else 0/1.

    Slurm array ids need not start at 0 (`--array=1-4`): the index is taken relative to
    SLURM_ARRAY_TASK_MIN when that is set.
    """
    env = os.environ if env is None else env
    if index is not None or count is not None:
        return ShardSlot(index or 0, count or 1, "options")
    task, ntasks = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
    if task is not None and ntasks is not None:
        return ShardSlot(task - (_int(env, "SLURM_ARRAY_TASK_MIN") or 0), ntasks, "slurm-array")
    rank, size = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
    if rank is not None and size is not None:
        return ShardSlot(rank, size, "slurm-rank")
    return ShardSlot(0, 1, "default")


@dataclass(frozen=True)
class SlurmJob:
    job_id: str | None
    restart_count: int
    local_id: int

    @property
    def under_slurm(self) -> bool:
        return self.job_id is not None


def slurm_job(env: Mapping[str, str] | None = None) -> SlurmJob:
    env = os.environ if env is None else env
    return SlurmJob(
        job_id=env.get("SLURM_JOB_ID") or None,
        restart_count=_int(env, "SLURM_RESTART_COUNT") or 0,
        local_id=_int(env, "SLURM_LOCALID") or 0,
    )


def under_launcher(env: Mapping[str, str] | None = None) -> bool:
    """True when a Horovod/MPI/Slurm launcher started this process as one of several ranks."""
    env = os.environ if env is None else env
    keys = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
    if any(k in env for k in keys):
        return True
    return (_int(env, "SLURM_NTASKS") or 1) > 1 and "SLURM_PROCID" in env
