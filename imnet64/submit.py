"""Render the Slurm templates (slurm/*.sh) with options, and submit them with sbatch.

Rendering edits the template's text: an `#SBATCH --name=value` line is replaced when the
template has one and added after the last `#SBATCH` line otherwise, and settings become
`export IMNET64_...=value` lines after the `#SBATCH` block. The rendered script is what
`sbatch` receives on stdin, so `--dry-run` shows exactly what would run.

Nothing here imports click or TensorFlow; errors the user can fix are UserError.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from imnet64.errors import UserError

STAGES = ("label", "shard", "train")
TEMPLATE_FILES = {"label": "label.sh", "shard": "shard.sh", "train": "train.sh"}
# Per-task log names: an array job has one log per task; train's log spans requeues.
LOG_PATTERNS = {"label": "%x-%A_%a.log", "shard": "%x-%j.log", "train": "%x-%j.log"}
_SBATCH_LINE = re.compile(r"^#SBATCH\s+(--[A-Za-z0-9-]+)(?:[=\s]\s*(.*?))?\s*$")


def templates_dir() -> Path:
    """slurm/ of the checkout imnet64 runs from, or $IMNET64_SLURM_TEMPLATES."""
    env = os.environ.get("IMNET64_SLURM_TEMPLATES")
    folder = Path(env) if env else Path(__file__).resolve().parents[1] / "slurm"
    if not (folder / TEMPLATE_FILES["train"]).is_file():
        raise UserError(
            f"Slurm templates not found in {folder}: set IMNET64_SLURM_TEMPLATES to the "
            "slurm/ folder of an imnet64 checkout, or pass --template FILE")
    return folder


def template_text(stage: str, template: str | os.PathLike | None = None) -> str:
    path = Path(template) if template else templates_dir() / TEMPLATE_FILES[stage]
    try:
        return path.read_text()
    except OSError as e:
        raise UserError(f"cannot read template {path}: {e.strerror}") from None


@dataclass
class Job:
    """One sbatch submission: the stage, #SBATCH options and the settings to export."""

    stage: str
    sbatch: dict[str, str | None] = field(default_factory=dict)  # "--nodes" -> "2"; None drops
    env: dict[str, str] = field(default_factory=dict)  # "IMNET64_INPUT" -> "/data"
    template: str | None = None

    def render(self) -> str:
        return render(template_text(self.stage, self.template), self.sbatch, self.env)


def render(text: str, sbatch: dict[str, str | None], env: dict[str, str]) -> str:
    """`text` with #SBATCH options set (value "" = a bare flag, None = drop the line) and
    `export` lines for `env` after the #SBATCH block."""
    lines = text.splitlines()
    positions = {}
    last = None
    for i, line in enumerate(lines):
        m = _SBATCH_LINE.match(line)
        if m:
            positions.setdefault(m.group(1), i)
            last = i
    if last is None:
        raise UserError("the template has no #SBATCH lines; is it a Slurm batch script?")
    added, dropped = [], set()
    for name, value in sbatch.items():
        if not name.startswith("--"):
            raise ValueError(f"sbatch option {name!r} must start with --")
        if value is None:
            if name in positions:
                dropped.add(positions[name])
            continue
        line = f"#SBATCH {name}" + (f"={value}" if value != "" else "")
        if name in positions:
            lines[positions[name]] = line
        else:
            added.append(line)
    block = list(added)
    if env:
        block.append("# Settings from `imnet64 submit`:")
        block += [f"export {k}={shlex.quote(str(v))}" for k, v in env.items()]
    out = [line for i, line in enumerate(lines[: last + 1]) if i not in dropped]
    out += block + lines[last + 1:]
    return "\n".join(out) + "\n"


def _sbatch_error(stage: str, stderr: str, partition: str | None) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    message = lines[-1] if lines else "no message"
    for prefix in ("sbatch: error: ", "Batch job submission failed: "):
        message = message.removeprefix(prefix)
    if partition and "partition" in message.lower():
        message += f" (--partition {partition}; `sinfo -s` lists the partitions)"
    return f"sbatch refused the {stage} job: {message}"


def sbatch_path() -> str:
    path = shutil.which("sbatch")
    if not path:
        raise UserError("sbatch not found on PATH: run this on a Slurm login node "
                        "(or load Slurm, e.g. `module load slurm`); --dry-run shows the script")
    return path


def submit(job: Job, script: str | None = None) -> str:
    """Submit `job` (its rendered script unless `script` is given); returns the job id."""
    script = job.render() if script is None else script
    _make_log_dirs(job)
    try:
        done = subprocess.run([sbatch_path(), "--parsable"], input=script, text=True,
                              capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise UserError(f"sbatch did not answer within 120 s for the {job.stage} job") from None
    if done.returncode != 0:
        raise UserError(_sbatch_error(job.stage, done.stderr, job.sbatch.get("--partition")))
    job_id = done.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise UserError(f"unexpected sbatch output for the {job.stage} job: {done.stdout!r}")
    return job_id


def _make_log_dirs(job: Job) -> None:
    # Slurm does not create the folder of --output; a job whose log cannot open dies silently.
    output = job.sbatch.get("--output")
    if output and "/" in output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)


def cancel(job_ids: list[str]) -> None:
    scancel = shutil.which("scancel")
    if scancel and job_ids:
        subprocess.run([scancel, *job_ids], capture_output=True, timeout=60)


def submit_chain(jobs: list[Job]) -> list[str]:
    """Submit `jobs` in order, each after the previous one succeeded (afterok). If one is
    refused, the ones already submitted are cancelled: all or nothing."""
    ids: list[str] = []
    for job in jobs:
        if ids:
            job.sbatch["--dependency"] = f"afterok:{ids[-1]}"
        try:
            ids.append(submit(job))
        except UserError as e:
            if ids:
                cancel(ids)
                raise UserError(f"{e}; cancelled the jobs already submitted: "
                                f"{', '.join(ids)}") from None
            raise
    return ids


def log_option(stage: str, log_dir: str | os.PathLike) -> str:
    return str(Path(log_dir) / LOG_PATTERNS[stage])


def missing_label_shards(label_dir: str | os.PathLike, num_shards: int) -> list[int]:
    """Shard indexes of `label_dir` that are not done (missing or partial)."""
    from imnet64.label_status import label_status

    if not Path(label_dir).is_dir():
        return list(range(num_shards))
    status = label_status(label_dir, num_shards)
    return [s.index for s in status.shards if s.state != "done"]


def array_spec(indexes: list[int], max_parallel: int | None = None) -> str:
    """[0,1,2,5,7,8] -> "0-2,5,7-8" (with "%K" when at most K tasks may run at once)."""
    if not indexes:
        raise ValueError("no array indexes")
    parts, start, prev = [], indexes[0], indexes[0]
    for i in list(indexes[1:]) + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts) + (f"%{max_parallel}" if max_parallel else "")


# -- building the jobs of each stage from options -------------------------------------


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


def _abs(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def default_cmd() -> str | None:
    """The imnet64 of the running environment (a venv on a shared file system is what the
    compute nodes should run too), if there is one next to this Python."""
    exe = Path(sys.executable).parent / "imnet64"
    return str(exe) if exe.is_file() else None


def _parse_sbatch_arg(arg: str) -> tuple[str, str]:
    if not arg.startswith("--"):
        raise UserError(f"--sbatch-arg takes long sbatch options like --qos=high, not {arg!r}")
    name, sep, value = arg.partition("=")
    return name, value if sep else ""


def _base(stage: str, common: Common) -> Job:
    sbatch: dict[str, str | None] = {}
    for name, value in (("--partition", common.partition), ("--account", common.account),
                        ("--time", common.time), ("--job-name", common.job_name)):
        if value:
            sbatch[name] = value
    if common.log_dir:
        sbatch["--output"] = log_option(stage, _abs(common.log_dir))
    for arg in common.sbatch_args:
        name, value = _parse_sbatch_arg(arg)
        sbatch[name] = value
    env: dict[str, str] = {}
    if common.image:
        env["IMNET64_IMAGE"] = _abs(common.image)
    elif common.cmd or default_cmd():
        env["IMNET64_CMD"] = common.cmd or default_cmd() or ""
    if common.work:
        env["IMNET64_WORK"] = _abs(common.work)
    return Job(stage, sbatch, env, common.template)


def label_job(common: Common, *, input_path: str | None = None, label_dir: str | None = None,
              teacher: str | None = None, shards: int | None = None,
              only: list[int] | None = None, max_parallel: int | None = None,
              args: str | None = None) -> Job:
    """The label array: shards 0..N-1, or only the shard indexes in `only`."""
    job = _base("label", common)
    if shards is not None and shards < 1:
        raise UserError(f"--shards must be at least 1 (got {shards})")
    if only is not None:
        if shards is None:
            raise UserError("naming the shards to run needs --shards (the shard count)")
        job.sbatch["--array"] = array_spec(only, max_parallel)
    elif shards is not None:
        job.sbatch["--array"] = array_spec(list(range(shards)), max_parallel)
    elif max_parallel:
        raise UserError("--max-parallel needs --shards (the shard count)")
    if shards is not None:
        job.env["IMNET64_NUM_SHARDS"] = str(shards)
    for name, value in (("IMNET64_INPUT", input_path), ("IMNET64_LABEL_DIR", label_dir)):
        if value:
            job.env[name] = _abs(value)
    if teacher:
        # a TF Hub URL or "offline" stays as given; a local folder becomes absolute
        job.env["IMNET64_TEACHER"] = _abs(teacher) if os.path.exists(teacher) else teacher
    if args:
        job.env["IMNET64_LABEL_ARGS"] = args
    return job


def shard_job(common: Common, *, label_dir: str | None = None, dataset: str | None = None,
              ntasks: int | None = None, args: str | None = None) -> Job:
    job = _base("shard", common)
    if ntasks is not None:
        if ntasks < 1:
            raise UserError(f"--ntasks must be at least 1 (got {ntasks})")
        job.sbatch["--ntasks"] = str(ntasks)
    for name, value in (("IMNET64_LABEL_DIR", label_dir), ("IMNET64_DATASET", dataset)):
        if value:
            job.env[name] = _abs(value)
    if args:
        job.env["IMNET64_SHARD_ARGS"] = args
    return job


def train_job(common: Common, *, dataset: str | None = None, run_dir: str | None = None,
              nodes: int | None = None, ntasks_per_node: int | None = None,
              gpus_per_node: int | None = None, signal: str | None = None,
              signal_time: int | None = None, args: str | None = None) -> Job:
    job = _base("train", common)
    for name, value in (("--nodes", nodes), ("--ntasks-per-node", ntasks_per_node)):
        if value is not None:
            if value < 1:
                raise UserError(f"{name} must be at least 1 (got {value})")
            job.sbatch[name] = str(value)
    if gpus_per_node is not None:
        if gpus_per_node < 0:
            raise UserError(f"--gpus-per-node must be 0 or more (got {gpus_per_node})")
        # 0: a CPU-only cluster, where any GPU request would be refused
        job.sbatch["--gpus-per-node"] = str(gpus_per_node) if gpus_per_node else None
    if signal:
        from imnet64.preemption import parse_signal

        job.env["IMNET64_SIGNAL"] = parse_signal(signal).name.removeprefix("SIG")
    if signal_time is not None:
        if signal_time < 1:
            raise UserError(f"--signal-time must be at least 1 second (got {signal_time})")
        job.sbatch["--signal"] = f"B:USR1@{signal_time}"
    for name, value in (("IMNET64_DATASET", dataset), ("IMNET64_RUN_DIR", run_dir)):
        if value:
            job.env[name] = _abs(value)
    if args:
        job.env["IMNET64_TRAIN_ARGS"] = args
    return job
