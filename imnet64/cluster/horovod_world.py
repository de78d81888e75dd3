"""The Horovod world of a training process (`--engine horovod`): rank, size, and the few
collectives we use, one implementation of the World protocol (imnet64.cluster.world).

Without a launcher Horovod gives size 1 and everything below is a cheap no-op, so the same
trainer runs as a single process. If Horovod is not installed at all, a single-process world
is used (and asking for more ranks is a clear error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from imnet64.cluster.devices import pin_gpu, set_cpu_threads
from imnet64.cluster.environment import under_launcher
from imnet64.errors import UserError

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


@dataclass
class HorovodWorld:
    rank: int
    size: int
    local_rank: int
    local_size: int
    hvd: Any  # horovod.tensorflow, or None for a single process without Horovod

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def tape(self, tape: tf.GradientTape) -> tf.GradientTape:
        """A tape whose gradients are averaged over all ranks (allreduce)."""
        if self.hvd is None or self.size == 1:
            return tape
        return self.hvd.DistributedGradientTape(tape)

    def any_in_graph(self, flag: tf.Tensor) -> tf.Tensor:
        """True on every rank if `flag` is true on any (usable inside tf.function, where
        Horovod fuses it with the gradient allreduce)."""
        if self.hvd is None or self.size == 1:
            return flag
        total = self.hvd.allreduce(tf.cast(flag, tf.int32), op=self.hvd.Sum, name="stop_flag")
        return total > 0

    def sum(self, values: Any, name: str) -> np.ndarray:
        """Element-wise sum over ranks of a small numpy array (metrics, counts)."""
        values = np.asarray(values, dtype=np.float64)
        if self.hvd is None or self.size == 1:
            return values
        return self.hvd.allreduce(tf.constant(values), op=self.hvd.Sum, name=name).numpy()

    def average_variables(self, variables: list[tf.Variable], name: str) -> None:
        """Replace each variable by its mean over ranks (BatchNorm moving statistics, which
        each rank updates from its own batches)."""
        if self.hvd is None or self.size == 1 or not variables:
            return
        means = self.hvd.grouped_allreduce([v.read_value() for v in variables],
                                           op=self.hvd.Average, name=name)
        for v, m in zip(variables, means):
            v.assign(m)

    def broadcast_variables(self, variables: list[tf.Variable]) -> None:
        if self.hvd is not None and self.size > 1:
            self.hvd.broadcast_variables(variables, root_rank=0)

    def broadcast_object(self, obj: Any, name: str) -> Any:
        if self.hvd is None or self.size == 1:
            return obj
        return self.hvd.broadcast_object(obj, root_rank=0, name=name)

    def barrier(self) -> None:
        """Wait until every rank got here (horovod.tensorflow has no barrier(): a tiny
        allreduce is one)."""
        if self.hvd is not None and self.size > 1:
            self.hvd.allreduce(tf.constant(0.0), op=self.hvd.Sum, name="barrier").numpy()


def init_horovod_world() -> HorovodWorld:
    """Initialise Horovod (size 1 without a launcher; a single process without Horovod) and
    this rank's devices and threads."""
    try:
        import horovod.tensorflow as hvd
    except ImportError as e:
        if under_launcher():
            raise UserError(f"started by a launcher but Horovod is not importable: {e} "
                            "(--engine tf needs no Horovod)") from e
        log.debug("Horovod not installed: running as a single process")
        return HorovodWorld(0, 1, 0, 1, None)
    hvd.init()
    world = HorovodWorld(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), hvd)
    pin_gpu(world.local_rank)
    set_cpu_threads(world.local_size)
    return world
