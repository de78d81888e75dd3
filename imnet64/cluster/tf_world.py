"""The World of a training process on tf.distribute (issue 18): the engine without Horovod.

An implementation of the World protocol (imnet64.cluster.world: rank, size, local_rank,
local_size, is_chief, tape, any_in_graph, sum, average_variables, broadcast_variables,
broadcast_object, barrier), beside HorovodWorld (imnet64.cluster.horovod_world), on
`tf.distribute.MultiWorkerMirroredStrategy` (MWMS): one process per GPU or per CPU task,
collectives over gRPC (ring) on CPUs, NCCL on GPUs.

Where the cluster comes from, in this order:
- TF_CONFIG (`{"cluster": {"worker": [...]}, "task": {...}}`; a "chief" job counts as rank 0);
- a Slurm step of more than one task (srun), through SlurmClusterResolver, minding its traps:
  its port base is fixed (8888 on every node, so two jobs sharing a node collide): the ports
  are derived from SLURM_JOB_ID here, one per rank, so also unique across nodes that share a
  host; with `auto_set_gpu` it rewrites CUDA_VISIBLE_DEVICES, which Slurm has already bound
  per task: auto_set_gpu=False; without `gpus_per_node` it runs nvidia-smi, absent in a CPU
  container: GPUs are never asked of it (TensorFlow's own count is handed to the strategy);
  it sorts host names as strings (node10 before node2) while Slurm numbers ranks in node-list
  order: a rank whose address is not on its own node is refused with the cause; and it takes
  Slurm's node names for host names, which they need not be (NodeName=node1 NodeAddr=...):
  a name that does not resolve is replaced by its NodeAddr from `scontrol show node`;
- otherwise one process (size 1): no strategy, every collective a no-op.

How the collectives are issued (the same on TF 2.18 and 2.21, public API only):
MWMS serves as the communicator, not as the owner of the variables. The model, the optimizer
and the loop's state are created outside `strategy.scope()` as plain variables that every
process keeps equal itself, as with Horovod: rank 0's values are broadcast at the start and
every rank applies the same averaged gradients. The loop's train step stays one ordinary
tf.function that never enters `strategy.run`, so the loop does not know the engine. In that
(default, cross-replica) context the World calls `strategy.extended.reduce_to` and
`batch_reduce_to`: for a value that is not a DistributedValues, MWMS
(CollectiveAllReduceExtended._reduce_to) takes it as this worker's one replica value and, with
more than one worker, all-reduces it across workers with collective ops; inside a tf.function
these become graph ops of the step (CollectiveReduceV2), eagerly they run at once. The way
through `strategy.run` would need MirroredVariables made under the scope, a step wrapped per
replica and the Keras optimizer applying in a replica context: the loop would change.

The one rule unlike Horovod's named collectives: MWMS numbers its collectives by a counter
per process (instance keys, taken when an op is made: when a tf.function is traced, or at an
eager call), so every worker must issue the same collectives in the same order and trace the
functions that hold them the same number of times. The `name` arguments are kept for the
interface and ignored. Broadcasts are sums in which every rank but 0 contributes zeros
(exact: x + 0 == x), since MWMS has no public broadcast.

The strategy must be made before TensorFlow runs its first op (it configures the runtime's
collectives and starts this task's gRPC server): call `init_tf_world` first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imnet64.cluster.devices import pin_gpu, set_cpu_threads
from imnet64.cluster.environment import Environment
from imnet64.cluster.peer_wait import timeout_from, wait_for_peers
from imnet64.errors import UserError

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

# Ports for Slurm steps: below Linux's ephemeral range (32768-60999), a block per job.
PORT_LOW, PORT_HIGH, PORT_BLOCK = 10240, 32768, 64


@dataclass(frozen=True)
class Placement:
    """Where this process sits in the cluster: every task's address, ordered by rank."""

    addresses: tuple[str, ...]
    rank: int
    source: str  # "TF_CONFIG", "slurm" or "alone", for logs

    @property
    def size(self) -> int:
        return len(self.addresses)

    def _host(self, rank: int) -> str:
        return self.addresses[rank].rsplit(":", 1)[0]

    @property
    def local_rank(self) -> int:
        return sum(self._host(r) == self._host(self.rank) for r in range(self.rank))

    @property
    def local_size(self) -> int:
        return sum(self._host(r) == self._host(self.rank) for r in range(self.size))

    def cluster_spec(self) -> tf.train.ClusterSpec:
        return tf.train.ClusterSpec({"worker": list(self.addresses)})


ALONE = Placement(addresses=("localhost:0",), rank=0, source="alone")


def placement_from_tf_config(text: str) -> Placement:
    """The cluster of a TF_CONFIG: "chief" (at most one task) then "worker" tasks."""
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        ordered = [("chief", a) for a in cluster.get("chief", [])]
        ordered += [("worker", a) for a in cluster.get("worker", [])]
        others = set(cluster) - {"chief", "worker"}
        rank = [i for i, (job, _) in enumerate(ordered) if job == task["type"]][task["index"]]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not a cluster with this task in it: {e!r}") from e
    if others:
        raise UserError(f"TF_CONFIG: jobs {sorted(others)} are not used; only chief and worker")
    return Placement(tuple(a for _, a in ordered), rank, "TF_CONFIG")


def slurm_port_base(job_id: str, size: int) -> int:
    """The first port of this job's block: blocks of PORT_BLOCK (or more for big steps)
    between PORT_LOW and PORT_HIGH, picked by the job id, so that jobs sharing a node
    differ (unless their ids collide modulo the number of blocks)."""
    block = PORT_BLOCK * -(-size // PORT_BLOCK)
    blocks = (PORT_HIGH - PORT_LOW) // block
    if blocks < 1:
        raise UserError(f"{size} tasks need more ports than {PORT_LOW}-{PORT_HIGH} holds")
    return PORT_LOW + (int(job_id) % blocks) * block


def placement_from_slurm(env: Environment) -> Placement:
    """The cluster of this srun step, by SlurmClusterResolver (which reads SLURM_PROCID,
    SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST and SLURM_STEP_TASKS_PER_NODE itself)."""
    size = env.slurm.step_num_tasks or 1
    # gpus_per_node/gpus_per_task are only the resolver's bookkeeping here (one "slot" per
    # task, so that it lists every task): the GPUs are Slurm's and pin_gpu's business.
    resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
        gpus_per_node=size, gpus_per_task=1, auto_set_gpu=False)
    hosts = [a.rsplit(":", 1)[0] for a in resolver.cluster_spec().job_tasks("worker")]
    rank, node = resolver.task_id, env.slurm.node_name
    if node and hosts[rank] != node:
        raise UserError(
            f"Slurm runs rank {rank} on {node} but SlurmClusterResolver places it on "
            f"{hosts[rank]} (it sorts node names as text and assumes block distribution): use "
            "node names that sort the same as text, or srun --distribution=block")
    base = slurm_port_base(env.slurm.job_id or "0", size)
    address = {h: node_address(h) for h in set(hosts)}
    return Placement(tuple(f"{address[h]}:{base + r}" for r, h in enumerate(hosts)), rank,
                     "slurm")


def node_address(node: str) -> str:
    """Where a Slurm node is reached: its name when that resolves (the usual case), else its
    NodeAddr (`scontrol show node`), as with NodeName=node1 NodeAddr=10.0.0.7."""
    try:
        socket.getaddrinfo(node, None)
        return node
    except socket.gaierror:
        pass
    try:
        shown = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True,
                               text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise UserError(f"Slurm node {node} does not resolve and scontrol cannot say its "
                        f"address: {e}") from e
    found = re.search(r"\bNodeAddr=(\S+)", shown)
    if not found:
        raise UserError(f"Slurm node {node} does not resolve and `scontrol show node {node}` "
                        "names no NodeAddr")
    return found.group(1)


def placement(env: Environment) -> Placement:
    """TF_CONFIG, else a Slurm step of several tasks, else alone."""
    if env.tf_config:
        return placement_from_tf_config(env.tf_config)
    if (env.slurm.step_num_tasks or 1) > 1:
        return placement_from_slurm(env)
    return ALONE


class _AveragingTape:
    """A GradientTape whose gradient() returns the mean of every rank's gradients."""

    def __init__(self, tape: tf.GradientTape, world: TFWorld):
        self._tape, self._world = tape, world

    def gradient(self, target, sources, *args, **kwargs):
        grads = self._tape.gradient(target, sources, *args, **kwargs)
        flat = tf.nest.flatten(grads, expand_composites=False)
        present = [i for i, g in enumerate(flat) if g is not None]
        means = self._world._reduce(tf.distribute.ReduceOp.MEAN, [flat[i] for i in present])
        for i, mean in zip(present, means):
            flat[i] = mean
        return tf.nest.pack_sequence_as(grads, flat)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tape, name)


@dataclass
class TFWorld:
    rank: int
    size: int
    local_rank: int
    local_size: int
    strategy: Any  # tf.distribute.MultiWorkerMirroredStrategy, or None for one process

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def _reduce(self, op: tf.distribute.ReduceOp, tensors: Sequence[tf.Tensor]) -> list:
        """All-reduce each tensor over the workers (in graph or eagerly)."""
        if not tensors:
            return []
        # The destination is this worker's device, and the values are placed there too: a
        # tensor in a tf.function has no device yet, and unless every value's device is the
        # destination, MWMS all-reduces them one by one instead of in one batch.
        device = self.strategy.extended.worker_devices[0]
        with tf.device(device):
            placed = [tf.identity(t) for t in tensors]
        reduced = self.strategy.extended.batch_reduce_to(op, [(t, device) for t in placed])
        # A one-device worker gets plain tensors back; unwrap a Mirrored should one come.
        return [self.strategy.experimental_local_results(r)[0] for r in reduced]

    def tape(self, tape: tf.GradientTape) -> tf.GradientTape:
        """A tape whose gradients are averaged over all ranks (allreduce)."""
        if self.strategy is None:
            return tape
        return _AveragingTape(tape, self)

    def any_in_graph(self, flag: tf.Tensor) -> tf.Tensor:
        """True on every rank if `flag` is true on any (usable inside tf.function)."""
        if self.strategy is None:
            return flag
        (total,) = self._reduce(tf.distribute.ReduceOp.SUM, [tf.cast(flag, tf.float32)])
        return total > 0

    def sum(self, values: Any, name: str) -> np.ndarray:
        """Element-wise sum over ranks of a small numpy array (metrics, counts)."""
        values = np.asarray(values, dtype=np.float64)
        if self.strategy is None:
            return values
        (total,) = self._reduce(tf.distribute.ReduceOp.SUM, [tf.constant(values)])
        return total.numpy()

    def average_variables(self, variables: list[tf.Variable], name: str) -> None:
        """Replace each variable by its mean over ranks (BatchNorm moving statistics)."""
        if self.strategy is None or not variables:
            return
        means = self._reduce(tf.distribute.ReduceOp.MEAN, [v.read_value() for v in variables])
        for v, m in zip(variables, means):
            v.assign(m)

    def broadcast_variables(self, variables: list[tf.Variable]) -> None:
        """Every rank takes rank 0's values (a sum to which the others add zeros)."""
        if self.strategy is None or not variables:
            return
        mine = [self._own_or_zeros(v.read_value()) for v in variables]
        for v, value in zip(variables, self._reduce(tf.distribute.ReduceOp.SUM, mine)):
            v.assign(tf.cast(value, v.dtype))

    def _own_or_zeros(self, value: tf.Tensor) -> tf.Tensor:
        # Collectives do not sum booleans: carry them as int32.
        value = tf.cast(value, tf.int32) if value.dtype == tf.bool else value
        return value if self.is_chief else tf.zeros_like(value)

    def broadcast_object(self, obj: Any, name: str) -> Any:
        """Rank 0's object (picklable) on every rank."""
        if self.strategy is None:
            return obj
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.is_chief else None
        length = int(self.sum([len(data) if self.is_chief else 0], name)[0])
        # Bytes as float32: exact, and a type every collective implementation sums.
        mine = data.astype(np.float32) if self.is_chief else np.zeros(length, np.float32)
        (total,) = self._reduce(tf.distribute.ReduceOp.SUM, [tf.constant(mine)])
        return pickle.loads(total.numpy().astype(np.uint8).tobytes())

    def barrier(self) -> None:
        """Wait until every rank got here (a tiny all-reduce is one)."""
        if self.strategy is not None:
            self.sum([0.0], "barrier")


@contextlib.contextmanager
def _python_signal_handlers_kept() -> Iterator[None]:
    """Put Python's signal handlers back after the block. MWMS starts TensorFlow's
    coordination service, whose preemption notifier installs a C++ SIGTERM handler over
    Python's: SIGTERM then only records a notice inside TensorFlow, and a rank went on
    training to the end when its launcher was killed (its PDEATHSIG is SIGTERM) or
    `kill` was sent to it (issue 24, item 10)."""
    kept = {sig: signal.getsignal(sig) for sig in signal.valid_signals()
            if sig not in (signal.SIGKILL, signal.SIGSTOP)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            # Python's own handlers only (SIG_DFL would drop TensorFlow's crash handlers)
            if callable(handler) and signal.getsignal(sig) is handler:
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, handler)  # the C-level trampoline again


def init_tf_world(env: Mapping[str, str] | None = None,
                  stop_reason: Callable[[], str | None] | None = None) -> TFWorld:
    """This process's place, devices and threads, then the strategy when there are peers
    (after a bounded wait for them that `stop_reason` can end: imnet64.cluster.peer_wait)."""
    environment = Environment.read(env)
    where = placement(environment)
    pin_gpu(where.local_rank)
    set_cpu_threads(where.local_size)
    if where.size == 1:
        log.debug("tf.distribute world: one process")
        return TFWorld(0, 1, 0, 1, None)
    wait_for_peers(where.addresses, where.rank, where.source,
                   timeout_from(environment.peer_timeout), stop_reason)
    gpus = len(tf.config.get_visible_devices("GPU"))
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        where.cluster_spec(), task_type="worker", task_id=where.rank,
        num_accelerators={"GPU": gpus}, rpc_layer="grpc")
    with _python_signal_handlers_kept():
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    log.info("tf.distribute world: rank %d of %d (%s), %d GPU(s)", where.rank, where.size,
             where.source, gpus)
    return TFWorld(where.rank, where.size, where.local_rank, where.local_size, strategy)
