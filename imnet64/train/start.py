"""Where a training runs: in this process (one rank of whatever started it), or as N ranks
this process starts itself (under horovodrun, or as tf.distribute workers, by the config's
engine). One decision for `imnet64 train --np` and the demo."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from pathlib import Path

from imnet64.cluster import folder_lock, launch
from imnet64.cluster.preemption import StopRequest
from imnet64.train.config import TrainConfig


def ranks_to_start(np: str | int | None) -> int:
    """How many ranks this process must start itself: N for `--np N` (or 'auto': one per
    GPU) when no launcher (horovodrun, mpirun, srun) started it as a rank; 0 when it trains
    here."""
    count = launch.resolve_np(np)
    return count if launch.should_self_launch(count) else 0


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
