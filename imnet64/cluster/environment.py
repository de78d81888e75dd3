"""Who am I and what was I told: the one reader (and writer) of the process environment.

Like submitit's JobEnvironment: `Environment.read()` takes the variables imnet64 cares
about from a mapping (default os.environ) once, into typed fields. Nothing else in imnet64
reads os.environ (tests/test_layering.py checks it); code outside imnet64.cluster asks an
Environment. Command-line options override these; without Slurm everything defaults to one
process.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from imnet64.errors import UserError

# the variables imnet64 itself defines
TEACHER_VAR = "IMNET64_TEACHER"  # the teacher when none is given
HOME_VAR = "IMNET64_HOME"  # where built artefacts are cached (default ~/.cache/imnet64)
IMAGE_ID_VAR = "IMNET64_IMAGE_ID"  # set by our Dockerfile: the container image's id
TF_STARTUP_LOGS_VAR = "IMNET64_TF_STARTUP_LOGS"  # "1": keep TensorFlow's start-up chatter
SELF_LAUNCHED_VAR = "IMNET64_SELF_LAUNCHED"  # "1" in ranks `train --np N` started
STARTED_AT_VAR = "IMNET64_STARTED_AT"  # the launching process's start time, for its ranks
LAUNCH_ID_VAR = "IMNET64_LAUNCH_ID"  # marks every process `train --np N` started, at any depth
SLURM_TEMPLATES_VAR = "IMNET64_SLURM_TEMPLATES"  # the slurm/ folder of a checkout
PEER_TIMEOUT_VAR = "IMNET64_PEER_TIMEOUT"  # seconds a tf.distribute rank waits for its peers
TFHUB_CACHE_VAR = "TFHUB_CACHE_DIR"
ENGINE_VAR = "IMNET64_ENGINE"  # slurm/train.sh's --engine

# what a launcher sets in each rank it starts
RANK_VARS = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
# the Slurm variables a shard slot is taken from, in the order they are read
SLURM_SHARD_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT",
                    "SLURM_PROCID", "SLURM_NTASKS")
# Variables that pick this process's shard or rank, or count its peers: set but not a whole
# number, they are an error naming the variable, never a silent fallback to shard 0 of 1
# (`SLURM_ARRAY_TASK_ID=abc` labeled everything as one shard, issue 24).
NUMBER_VARS = (*SLURM_SHARD_VARS, "SLURM_ARRAY_TASK_MAX", "SLURM_LOCALID",
               "SLURM_STEP_NUM_TASKS", "SLURM_NODEID", "SLURM_JOB_NUM_NODES",
               "SLURM_RESTART_COUNT", *RANK_VARS, "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK",
               "HOROVOD_LOCAL_SIZE", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
               "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_SIZE")


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def malformed_numbers(env: Mapping[str, str]) -> dict[str, str]:
    """The NUMBER_VARS set in `env` to anything but a whole number of 0 or more."""
    return {k: env[k] for k in NUMBER_VARS
            if k in env and not re.fullmatch(r"\s*[0-9]+\s*", env[k])}


def malformed_message(name: str, value: str) -> str:
    return (f"{name}={value!r} is not a whole number: cannot tell this process's shard or "
            "rank (Slurm and the MPI launchers set numbers; an edited or copied environment?)")


def _text(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name) or None


def _float(env: Mapping[str, str], name: str) -> float | None:
    try:
        return float(env[name])
    except (KeyError, ValueError):
        return None


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

    @property
    def siblings_run_together(self) -> bool:
        """The other slots run at the same time as this one (ranks of one Slurm step), so one
        of them can wait for the rest; array tasks may run one after another, or never."""
        return self.source == "slurm-rank" and self.count > 1


@dataclass(frozen=True)
class Slurm:
    """The SLURM_* facts of this process (None: not set, e.g. outside Slurm)."""

    job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: int | None = None
    array_task_min: int | None = None
    array_task_count: int | None = None
    step_id: str | None = None
    step_num_tasks: int | None = None  # SLURM_STEP_NUM_TASKS: the tasks of this srun step
    node_name: str | None = None  # SLURMD_NODENAME: the node this task runs on
    ntasks: int | None = None
    procid: int | None = None
    localid: int | None = None
    nodes: int | None = None  # SLURM_JOB_NUM_NODES
    restart_count: int = 0
    # the SLURM_ variables of NUMBER_VARS that are set but not numbers
    malformed: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def read(cls, env: Mapping[str, str]) -> Slurm:
        return cls(
            malformed=MappingProxyType({k: v for k, v in malformed_numbers(env).items()
                                        if k.startswith("SLURM_")}),
            job_id=_text(env, "SLURM_JOB_ID"),
            array_job_id=_text(env, "SLURM_ARRAY_JOB_ID"),
            array_task_id=_int(env, "SLURM_ARRAY_TASK_ID"),
            array_task_min=_int(env, "SLURM_ARRAY_TASK_MIN"),
            array_task_count=_int(env, "SLURM_ARRAY_TASK_COUNT"),
            step_id=_text(env, "SLURM_STEP_ID"),
            step_num_tasks=_int(env, "SLURM_STEP_NUM_TASKS"),
            node_name=_text(env, "SLURMD_NODENAME"),
            ntasks=_int(env, "SLURM_NTASKS"),
            procid=_int(env, "SLURM_PROCID"),
            localid=_int(env, "SLURM_LOCALID"),
            nodes=_int(env, "SLURM_JOB_NUM_NODES"),
            restart_count=_int(env, "SLURM_RESTART_COUNT") or 0,
        )

    def shard_slot(self) -> ShardSlot:
        """The Slurm array task, else the Slurm rank, else 0 of 1.

        Slurm array ids need not start at 0 (`--array=1-4`): the index is taken relative to
        SLURM_ARRAY_TASK_MIN when that is set. A variable of these that is set but not a
        whole number, or an array task id without the task count, is a UserError naming it
        (never a fallback to 0 of 1)."""
        for name in SLURM_SHARD_VARS:
            if name in self.malformed:
                raise UserError(malformed_message(name, self.malformed[name]))
        if self.array_task_id is not None and self.array_task_count is None:
            raise UserError(f"SLURM_ARRAY_TASK_ID={self.array_task_id} without "
                            "SLURM_ARRAY_TASK_COUNT: the shard count is unknown; pass "
                            "--num-shards")
        if self.array_task_id is not None and self.array_task_count is not None:
            return ShardSlot(self.array_task_id - (self.array_task_min or 0),
                             self.array_task_count, "slurm-array")
        if self.procid is not None and self.ntasks is not None:
            return ShardSlot(self.procid, self.ntasks, "slurm-rank")
        return ShardSlot(0, 1, "default")


@dataclass(frozen=True)
class Environment:
    """The environment variables imnet64 reads, typed; `variables` keeps the whole snapshot
    for the reports that list what a launcher set (`imnet64 doctor`)."""

    slurm: Slurm
    rank_vars: frozenset[str]  # which of RANK_VARS are set
    teacher: str | None  # IMNET64_TEACHER, stripped
    home: Path  # IMNET64_HOME, else ~/.cache/imnet64
    image_id: str | None  # IMNET64_IMAGE_ID
    tf_startup_logs: bool  # IMNET64_TF_STARTUP_LOGS == "1"
    self_launched: bool  # IMNET64_SELF_LAUNCHED == "1"
    started_at: float | None  # IMNET64_STARTED_AT
    slurm_templates: str | None  # IMNET64_SLURM_TEMPLATES
    cuda_visible_devices: str | None  # None: not set ("" hides every GPU)
    tf_xla_flags: str
    tf_cpp_min_log_level: str  # "0" when not set
    tf_enable_onednn_opts: str | None
    tfhub_cache_dir: str | None
    tf_config: str | None  # TF_CONFIG, stripped: a tf.distribute cluster and this task in it
    engine: str | None  # IMNET64_ENGINE (slurm/train.sh's --engine), stripped
    peer_timeout: str | None  # IMNET64_PEER_TIMEOUT as given (checked where it is used)
    variables: Mapping[str, str]

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> Environment:
        env = dict(os.environ if env is None else env)
        return cls(
            slurm=Slurm.read(env),
            rank_vars=frozenset(k for k in RANK_VARS if k in env),
            teacher=env.get(TEACHER_VAR, "").strip() or None,
            home=Path(env.get(HOME_VAR) or Path.home() / ".cache" / "imnet64"),
            image_id=_text(env, IMAGE_ID_VAR),
            tf_startup_logs=env.get(TF_STARTUP_LOGS_VAR) == "1",
            self_launched=env.get(SELF_LAUNCHED_VAR) == "1",
            started_at=_float(env, STARTED_AT_VAR),
            slurm_templates=_text(env, SLURM_TEMPLATES_VAR),
            cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
            tf_xla_flags=env.get("TF_XLA_FLAGS", ""),
            tf_cpp_min_log_level=env.get("TF_CPP_MIN_LOG_LEVEL", "0"),
            tf_enable_onednn_opts=env.get("TF_ENABLE_ONEDNN_OPTS"),
            tfhub_cache_dir=_text(env, TFHUB_CACHE_VAR),
            tf_config=env.get("TF_CONFIG", "").strip() or None,
            engine=env.get(ENGINE_VAR, "").strip() or None,
            peer_timeout=env.get(PEER_TIMEOUT_VAR, "").strip() or None,
            variables=MappingProxyType(env),
        )

    @property
    def under_launcher(self) -> bool:
        """True when a Horovod/MPI/Slurm launcher (or whoever set TF_CONFIG) started this
        process as one of several ranks."""
        if self.rank_vars or self.tf_config:
            return True
        return (self.slurm.ntasks or 1) > 1 and "SLURM_PROCID" in self.variables

    def malformed(self) -> dict[str, str]:
        """The NUMBER_VARS set to anything but a whole number (`imnet64 doctor` lists them)."""
        return malformed_numbers(self.variables)

    def check_rank_variables(self) -> None:
        """A UserError naming the first rank or shard variable that is not a number."""
        for name, value in self.malformed().items():
            raise UserError(malformed_message(name, value))

    def shard_slot(self, index: int | None = None, count: int | None = None) -> ShardSlot:
        """Shard index/count: the options when either is given, else Slurm's (see
        Slurm.shard_slot)."""
        if index is not None or count is not None:
            return ShardSlot(index or 0, count or 1, "options")
        return self.slurm.shard_slot()

    def shard_variables(self) -> dict[str, str]:
        """The Slurm variables shard slots are taken from that are set, in reading order
        (for messages saying where a shard number came from)."""
        return {k: self.variables[k] for k in SLURM_SHARD_VARS if k in self.variables}


def shard_slot(index: int | None = None, count: int | None = None,
               env: Mapping[str, str] | None = None) -> ShardSlot:
    """Shard index/count: options, else Slurm array task, else Slurm rank, else 0/1."""
    return Environment.read(env).shard_slot(index, count)


def under_launcher(env: Mapping[str, str] | None = None) -> bool:
    """True when a Horovod/MPI/Slurm launcher started this process as one of several ranks."""
    return Environment.read(env).under_launcher


def set_default(name: str, value: str) -> None:
    """Set `name` for this process and its children unless it is set already."""
    os.environ.setdefault(name, value)


@contextlib.contextmanager
def variable_set(name: str, value: str) -> Iterator[None]:
    """`name`=`value` for the duration of the block (for libraries that read the variable
    on every call, as TF Hub does TFHUB_CACHE_DIR); the previous state comes back after."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def with_variables(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus `extra`: what a child process is started with."""
    return {**os.environ, **extra}
