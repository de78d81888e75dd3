"""The World of a training process: what the trainer asks of its engine (rank, size, and the
few collectives it uses), as a protocol that both engines implement: HorovodWorld
(imnet64.cluster.horovod_world, `--engine horovod`) and TFWorld (imnet64.cluster.tf_world,
`--engine tf`). `init_world` starts the one asked for; the trainer knows only this protocol.

Every collective must be called by every rank at the same point, in the same order
(tf.distribute numbers its collectives per process; Horovod matches them by `name`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from imnet64.cluster.engines import check_engine
from imnet64.cluster.horovod_world import init_horovod_world

import numpy as np
import tensorflow as tf


class World(Protocol):
    rank: int
    size: int
    local_rank: int
    local_size: int

    @property
    def is_chief(self) -> bool:
        """Rank 0: the one that writes files."""
        ...

    def tape(self, tape: tf.GradientTape) -> tf.GradientTape:
        """A tape whose gradients are averaged over all ranks."""
        ...

    def any_in_graph(self, flag: tf.Tensor) -> tf.Tensor:
        """True on every rank if `flag` is true on any (usable inside tf.function)."""
        ...

    def sum(self, values: Any, name: str) -> np.ndarray:
        """Element-wise sum over ranks of a small numpy array (metrics, counts)."""
        ...

    def average_variables(self, variables: list[tf.Variable], name: str) -> None:
        """Replace each variable by its mean over ranks."""
        ...

    def broadcast_variables(self, variables: list[tf.Variable]) -> None:
        """Rank 0's values into every rank's variables."""
        ...

    def broadcast_object(self, obj: Any, name: str) -> Any:
        """Rank 0's `obj` (picklable) on every rank."""
        ...

    def barrier(self) -> None:
        """Wait until every rank got here."""
        ...


def init_world(engine: str = "horovod",
               stop_reason: Callable[[], str | None] | None = None) -> World:
    """Initialise the engine (size 1 without a launcher) and this rank's devices and threads.

    `engine` "horovod" (the default; imnet64.cluster.horovod_world) or "tf" (tf.distribute;
    imnet64.cluster.tf_world, whose wait for its peers `stop_reason` can end)."""
    if check_engine("--engine", engine) == "tf":
        from imnet64.cluster.tf_world import init_tf_world

        return init_tf_world(stop_reason=stop_reason)
    return init_horovod_world()
