"""The sbatch Job of each pipeline stage (label, shard, train), built from `imnet64 submit`'s
options: which #SBATCH options to set and which IMNET64_* settings to export, each value
checked (imnet64.cluster.sbatch_values) before it reaches the script.

imnet64.cluster.slurm_submit renders the Job's template and submits it; which shards to
run and how the three jobs chain is imnet64.pipeline.submit's. Nothing here imports click
or TensorFlow; errors the user can fix are UserError.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from imnet64.cluster import job_consistency
from imnet64.cluster.engines import check_engine
from imnet64.cluster.sbatch_values import (
    SBATCH_GRAMMARS,
    check_count,
    check_directive,
    check_text,
    parse_sbatch_arg,
)
from imnet64.cluster.slurm_submit import Job, array_spec, log_option
from imnet64.errors import UserError

# the largest --max-restarts train.sh takes (18 digits: bash compares signed 64-bit integers
# and reports larger ones as "integer expression expected", then requeued anyway)
MAX_RESTARTS_LIMIT = 10**18 - 1


@dataclass
class Common:
    """Options every stage takes."""

    partition: str | None = None
    account: str | None = None
    time: str | None = None
    job_name: str | None = None
    log_dir: str | None = None
    image: str | None = None  # Apptainer image -> IMNET64_IMAGE
    cmd: str | None = None  # how to run imnet64 -> IMNET64_CMD
    work: str | None = None  # IMNET64_WORK: base folder of the templates' defaults
    sbatch_args: list[str] = field(default_factory=list)  # raw "--name=value" / "--flag"
    template: str | None = None
    time_option: str = "--time"  # the option `time` came from (pipeline: --label-time, ...)


def _abs(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def _path(option: str, path: str | os.PathLike) -> str:
    """An absolute path for an `export` line (any text but control characters)."""
    return _abs(check_text(option, os.fspath(path)))


def _export_paths(job: Job, paths: Iterable[tuple[str, str, str | None]]) -> None:
    """`export NAME=<absolute path>` for each (NAME, option, path) given a path."""
    for name, option, value in paths:
        if value:
            job.env[name] = _path(option, value)


def default_cmd() -> str | None:
    """The imnet64 of the running environment (a venv on a shared file system is what the
    compute nodes should run too), if there is one next to this Python."""
    exe = Path(sys.executable).parent / "imnet64"
    return str(exe) if exe.is_file() else None


def _log_dir(option: str, log_dir: str) -> str:
    """The absolute log folder, if it can stand in an #SBATCH --output line."""
    path = _abs(check_text(option, log_dir))
    try:
        return check_directive(option, path)
    except UserError as e:
        raise UserError(f"{e} (the log path goes into an #SBATCH line: choose a folder "
                        "whose absolute path has none of that)") from None


def _base(stage: str, common: Common) -> Job:
    """The Job of `stage` with the options every stage takes, each checked."""
    sbatch: dict[str, str | None] = {}
    for name, option, value in (("--partition", "--partition", common.partition),
                                ("--account", "--account", common.account),
                                ("--time", common.time_option, common.time),
                                ("--job-name", "--job-name", common.job_name)):
        if value is not None:
            sbatch[name] = SBATCH_GRAMMARS[name](option, value)
    log_dir = None
    if common.log_dir is not None:
        log_dir = _log_dir("--log-dir", common.log_dir)
        sbatch["--output"] = log_option(stage, log_dir)
    for arg in common.sbatch_args:
        name, value = parse_sbatch_arg(arg)
        sbatch[name] = value
    env: dict[str, str] = {}
    cmd = check_text("--cmd", common.cmd) if common.cmd else None
    if common.image:
        env["IMNET64_IMAGE"] = _path("--image", common.image)
    elif cmd:
        env["IMNET64_CMD"] = cmd
    elif default_cmd():
        env["IMNET64_CMD"] = check_text("this environment's imnet64 (use --cmd)",
                                        default_cmd() or "")
    if common.work:
        env["IMNET64_WORK"] = _path("--work", common.work)
    if common.template is not None:
        check_text("--template", common.template)
    return Job(stage, sbatch, env, common.template, log_dir)


@dataclass(frozen=True)
class LabelSettings:
    """What `submit label` (and the pipeline's label stage) takes beyond the common options."""

    input_path: str | None = None
    label_dir: str | None = None
    teacher: str | None = None
    shards: int | None = None
    max_parallel: int | None = None
    args: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem_per_task: str | None = None

    def job(self, common: Common, only: list[int] | None = None) -> Job:
        """The label array: shards 0..N-1, or only the shard indexes in `only`; each task
        with the GPUs, CPUs and memory asked for (else the template's, see slurm/label.sh)."""
        job = _base("label", common)
        if self.gpus_per_task is not None:  # 0: drop the request (a CPU partition refuses any)
            job.sbatch["--gpus-per-task"] = str(
                check_count("--gpus-per-task", self.gpus_per_task)) if self.gpus_per_task \
                else None
        if self.cpus_per_task is not None:
            job.sbatch["--cpus-per-task"] = str(
                check_count("--cpus-per-task", self.cpus_per_task, 1))
        if self.mem_per_task is not None:
            job.sbatch["--mem"] = job_consistency.check_memory(
                "--mem-per-task", check_directive("--mem-per-task", self.mem_per_task))
        if any(k in job.sbatch for k in ("--mem-per-cpu", "--mem-per-gpu")):
            job.sbatch.setdefault("--mem", None)  # sbatch takes only one of them
        shards = self.shards
        if shards is not None and shards < 1:
            raise UserError(f"--shards must be at least 1 (got {shards})")
        if only is not None:
            if shards is None:
                raise UserError("naming the shards to run needs --shards (the shard count)")
            job.sbatch["--array"] = array_spec(only, self.max_parallel)
        elif shards is not None:
            job.sbatch["--array"] = array_spec(list(range(shards)), self.max_parallel)
        elif self.max_parallel:
            raise UserError("--max-parallel needs --shards (the shard count)")
        if shards is not None:
            job.env["IMNET64_NUM_SHARDS"] = str(shards)
        _export_paths(job, (("IMNET64_INPUT", "--input", self.input_path),
                            ("IMNET64_LABEL_DIR", "--label-dir", self.label_dir)))
        if self.teacher:
            # a TF Hub URL or "offline" stays as given; a local folder becomes absolute
            check_text("--teacher", self.teacher)
            job.env["IMNET64_TEACHER"] = (_abs(self.teacher) if os.path.exists(self.teacher)
                                          else self.teacher)
        if self.args:
            job.env["IMNET64_LABEL_ARGS"] = check_text("--label-args", self.args)
        return job


@dataclass(frozen=True)
class ShardSettings:
    """What `submit shard` (and the pipeline's shard stage) takes beyond the common options."""

    label_dir: str | None = None
    dataset: str | None = None
    ntasks: int | None = None
    args: str | None = None

    def job(self, common: Common) -> Job:
        job = _base("shard", common)
        if self.ntasks is not None:
            if self.ntasks < 1:
                raise UserError(f"--ntasks must be at least 1 (got {self.ntasks})")
            job.sbatch["--ntasks"] = str(self.ntasks)
        _export_paths(job, (("IMNET64_LABEL_DIR", "--label-dir", self.label_dir),
                            ("IMNET64_DATASET", "--dataset", self.dataset)))
        if self.args:
            job.env["IMNET64_SHARD_ARGS"] = check_text("--shard-args", self.args)
        return job


@dataclass(frozen=True)
class TrainSettings:
    """What `submit train` (and the pipeline's train stage) takes beyond the common options."""

    dataset: str | None = None
    run_dir: str | None = None
    nodes: int | None = None
    ntasks_per_node: int | None = None
    gpus_per_node: int | None = None
    signal: str | None = None
    signal_time: int | None = None
    args: str | None = None
    max_restarts: int | None = None
    engine: str | None = None  # IMNET64_ENGINE: horovod (the template's default) or tf
    allow_gpu_mismatch: bool = False  # ranks per node other than GPUs per node

    def job(self, common: Common) -> Job:
        job = _base("train", common)
        for name, value in (("--nodes", self.nodes), ("--ntasks-per-node", self.ntasks_per_node)):
            if value is not None:
                if value < 1:
                    raise UserError(f"{name} must be at least 1 (got {value})")
                job.sbatch[name] = str(value)
        if self.gpus_per_node is not None:
            if self.gpus_per_node < 0:
                raise UserError(f"--gpus-per-node must be 0 or more (got {self.gpus_per_node})")
            # 0: a CPU-only cluster, where any GPU request would be refused
            job.sbatch["--gpus-per-node"] = str(self.gpus_per_node) if self.gpus_per_node \
                else None
        gpus = job_consistency.gpu_count(job.sbatch.get("--gpus-per-node"))
        if gpus and "--ntasks-per-node" not in job.sbatch:
            job.sbatch["--ntasks-per-node"] = str(gpus)  # one rank per GPU
        job.checks.append(partial(job_consistency.check_ranks_match_gpus,
                                  allowed=self.allow_gpu_mismatch))
        if self.signal is not None:
            job.env["IMNET64_SIGNAL"] = _signal_name(self.signal)
        if self.signal_time is not None:
            if self.signal_time < 1:
                raise UserError("--signal-time must be at least 1 second "
                                f"(got {self.signal_time})")
            job.sbatch["--signal"] = f"B:USR1@{self.signal_time}"
        job.checks.append(partial(
            job_consistency.check_signal_before_time_limit,
            signal_option="--signal-time" if self.signal_time is not None else
            "--sbatch-arg --signal" if "--signal" in job.sbatch else
            "the template's signal time"))
        _export_paths(job, (("IMNET64_DATASET", "--dataset", self.dataset),
                            ("IMNET64_RUN_DIR", "--run-dir", self.run_dir)))
        if self.max_restarts is not None:
            job.env["IMNET64_MAX_RESTARTS"] = str(_max_restarts(self.max_restarts))
        if self.engine is not None:
            job.env["IMNET64_ENGINE"] = check_engine("--engine",
                                                     check_text("--engine", self.engine))
        if self.args:
            job.env["IMNET64_TRAIN_ARGS"] = check_text("--train-args", self.args)
        return job


def _signal_name(signal: str) -> str:
    """--signal's signal as train.sh takes it (USR1, not SIGUSR1)."""
    from imnet64.cluster.preemption import parse_signal

    check_text("--signal", signal)
    try:
        parsed = parse_signal(signal)
    except UserError as e:
        raise UserError(f"--signal {signal!r}: {e}") from None
    return parsed.name.removeprefix("SIG")


def _max_restarts(value: int) -> int:
    check_count("--max-restarts", value)
    if value > MAX_RESTARTS_LIMIT:  # train.sh compares it with bash's `[ -ge ]`
        raise UserError(f"--max-restarts must be at most {MAX_RESTARTS_LIMIT} (what "
                        f"slurm/train.sh can compare; got {value})")
    return value
