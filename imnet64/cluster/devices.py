"""This rank's devices and threads, whichever engine runs the collectives: one GPU per rank,
or a share of the cores when several ranks run on one CPU-only host."""

from __future__ import annotations

import os

import tensorflow as tf


def set_cpu_threads(local_size: int) -> None:
    """Several ranks on one CPU-only host would each start one thread per core and fight
    over them: give each rank its share of the cores instead (before TF starts its pools)."""
    if local_size <= 1 or tf.config.list_physical_devices("GPU"):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, (cores or 1) // local_size)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(share)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, share))
    except RuntimeError:  # TF already initialised (e.g. a second call in one process)
        pass


def pin_gpu(local_rank: int) -> None:
    """One GPU per rank (Horovod's convention), memory grown as needed."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    try:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
    except RuntimeError:
        pass
