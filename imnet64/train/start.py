"""Where a training runs: in this process (one rank of whatever started it), or as N ranks
this process starts itself (under horovodrun, or as tf.distribute workers, by the config's
engine). One decision for `imnet64 train --np` and the demo."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from pathlib import Path

from imnet64.cluster import folder_lock, launch, rank_limits
from imnet64.cluster.environment import Environment
from imnet64.cluster.preemption import StopRequest
from imnet64.train.config import TrainConfig


def ranks_to_start(np: str | int | None, oversubscribe: bool = False) -> int:
    """How many ranks this process must start itself: N for `--np N` (or 'auto': one per
    GPU) when no launcher (horovodrun, mpirun, srun) started it as a rank; 0 when it trains
    here. More than this machine holds is an error unless `oversubscribe`
    (imnet64.cluster.rank_limits)."""
    Environment.read().check_rank_variables()  # a malformed rank variable: never rank 0 of 1
    count = launch.resolve_np(np)
    if not launch.should_self_launch(count):
        return 0
    capacity = rank_limits.this_machine(launch.visible_gpus())
    return rank_limits.check_local_ranks(count, capacity, oversubscribe)


def start_ranks(cfg: TrainConfig, ranks: int,
                stop: StopRequest | Iterable[signal.Signals]) -> int:
    """Run `imnet64 train` with `cfg`'s options on `ranks` local ranks of `cfg.engine`; the
    exit code this command should give (see imnet64.cluster.launch.run_ranks for `stop`).

    RUN_DIR's writer's lock is taken here, for all the ranks (they inherit its descriptor,
    so it lasts until the last of them ends, even if this process is killed)."""
    folder_lock.check_apart("RUN_DIR", cfg.run_dir, "DATASET_DIR", cfg.dataset)
    with folder_lock.held(cfg.run_dir, "imnet64 train") as lock:
        return launch.run_ranks(ranks, cfg.to_argv(), Path(cfg.run_dir), stop, cfg.engine,
                                keep_fds=(lock.fd,))
