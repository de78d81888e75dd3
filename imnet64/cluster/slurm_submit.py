"""Render the Slurm templates (slurm/*.sh) with options, and submit them with sbatch.

Rendering edits the template's text: an `#SBATCH --name=value` line is replaced when the
template has one and added after the last `#SBATCH` line otherwise, and settings become
`export IMNET64_...=value` lines after the `#SBATCH` block. The rendered script is what
`sbatch` receives on stdin, so `--dry-run` shows exactly what would run; once submitted,
that script is also saved beside the job's logs as `<job name>-<job id>.sbatch`.

Every value is checked before it reaches the script, by the builders of each stage's Job
(imnet64.cluster.slurm_stage_jobs) with the grammar of imnet64.cluster.sbatch_values: a
value that could add a command or an sbatch option is refused with a one-line UserError
naming the option, and `render` checks again.

Nothing here imports click or TensorFlow; errors the user can fix are UserError.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imnet64 import atomic
from imnet64.cluster.environment import Environment
from imnet64.cluster.sbatch_values import check_settings, check_text
from imnet64.errors import UserError

STAGES = ("label", "shard", "train")
TEMPLATE_FILES = {"label": "label.sh", "shard": "shard.sh", "train": "train.sh"}
# Per-task log names: an array job has one log per task; train's log spans requeues.
LOG_PATTERNS = {"label": "%x-%A_%a.log", "shard": "%x-%j.log", "train": "%x-%j.log"}
_SBATCH_LINE = re.compile(r"^#SBATCH\s+(--[A-Za-z0-9-]+)(?:[=\s]\s*(.*?))?\s*$")


class TemplateError(UserError):
    """A template sbatch would not read the way imnet64 renders it."""


def _check_template(lines: list[str]) -> None:
    """Every #SBATCH line must come before the first command: sbatch reads none after."""
    first_command = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if first_command is None and stripped and not stripped.startswith("#"):
            first_command = (number, line)
        elif first_command and line.startswith("#SBATCH"):
            raise TemplateError(
                f"line {number} ({line!r}) comes after the command on line {first_command[0]} "
                f"({first_command[1]!r}); sbatch reads no #SBATCH line after the first command")


def templates_dir() -> Path:
    """slurm/ of the checkout imnet64 runs from, or $IMNET64_SLURM_TEMPLATES."""
    env = Environment.read().slurm_templates
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "slurm"
    if not (folder / TEMPLATE_FILES["train"]).is_file():
        raise UserError(
            f"Slurm templates not found in {folder}: set IMNET64_SLURM_TEMPLATES to the "
            "slurm/ folder of an imnet64 checkout, or pass --template FILE")
    return folder


def template_text(stage: str, template: str | os.PathLike | None = None) -> str:
    if template is not None:
        check_text("--template", os.fspath(template))
    path = Path(template) if template is not None else templates_dir() / TEMPLATE_FILES[stage]
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        where = (f"--template {os.fspath(template)!r}" if template is not None
                 else f"template {path}")
        raise UserError(f"{where}: cannot read it: {reason}") from None


@dataclass
class Job:
    """One sbatch submission: the stage, #SBATCH options and the settings to export."""

    stage: str
    sbatch: dict[str, str | None] = field(default_factory=dict)  # "--nodes" -> "2"; None drops
    env: dict[str, str] = field(default_factory=dict)  # "IMNET64_INPUT" -> "/data"
    template: str | None = None
    log_dir: str | None = None  # the folder of --output, made before submitting
    # checks of the rendered script as a whole (values that contradict each other)
    checks: list[Callable[[str], None]] = field(default_factory=list)

    def render(self) -> str:
        text = template_text(self.stage, self.template)
        try:
            script = render(text, self.sbatch, self.env)
        except TemplateError as e:
            if self.template:
                raise TemplateError(f"--template {os.fspath(self.template)!r}: {e}") from None
            raise
        for check in self.checks:
            check(script)
        return script


def render(text: str, sbatch: dict[str, str | None], env: dict[str, str]) -> str:
    """`text` with #SBATCH options set (value "" = a bare flag, None = drop the line) and
    `export` lines for `env` after the #SBATCH block."""
    check_settings(sbatch, env)
    lines = text.splitlines()
    _check_template(lines)
    positions = {}
    last = None
    for i, line in enumerate(lines):
        m = _SBATCH_LINE.match(line)
        if m:
            positions.setdefault(m.group(1), i)
            last = i
    if last is None:
        raise TemplateError("the template has no #SBATCH lines; is it a Slurm batch script?")
    added, dropped = [], set()
    for name, value in sbatch.items():
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
    script = "\n".join(out) + "\n"
    # what the checks above promise: one line per setting, all directives still read
    if len(script.splitlines()) != len(out):
        raise UserError("refusing to render: a setting would span more than one line")
    _check_template(script.splitlines())
    return script


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
    try:
        save_script(job, script, job_id)
    except OSError as e:  # the job is queued all the same: say so, do not fail
        print(f"warning: job {job_id} submitted, but its script could not be saved in "
              f"{script_folder(job)}: {e.strerror or e}", file=sys.stderr)
    return job_id


def _job_name(job: Job, script: str) -> str:
    for line in script.splitlines():
        m = _SBATCH_LINE.match(line)
        if m and m.group(1) == "--job-name" and m.group(2):
            return m.group(2)
    return f"imnet64-{job.stage}"


def script_folder(job: Job) -> Path:
    """Where the job's logs go: --log-dir, else the folder of the template's --output when
    it names one without %-patterns, else the job's working folder (sbatch's default)."""
    if job.log_dir:
        return Path(job.log_dir)
    workdir = Path(job.sbatch.get("--chdir") or os.getcwd())
    output = job.sbatch.get("--output")
    if output is None:
        for line in template_text(job.stage, job.template).splitlines():
            m = _SBATCH_LINE.match(line)
            if m and m.group(1) in ("--output", "-o") and m.group(2):
                output = m.group(2)
    if output and "/" in output:
        parent = output.rpartition("/")[0] or "/"
        if "%" not in parent:
            return workdir / parent
    return workdir


def save_script(job: Job, script: str, job_id: str) -> Path:
    """The script sbatch got, beside the job's logs as <job name>-<job id>.sbatch
    (atomically), so an operator reading a log also finds exactly what ran."""
    path = script_folder(job) / f"{_job_name(job, script)}-{job_id}.sbatch"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, script)
    return path


def _make_log_dirs(job: Job) -> None:
    # Slurm does not create the folder of --output; a job whose log cannot open dies silently.
    if job.log_dir:
        Path(job.log_dir).mkdir(parents=True, exist_ok=True)
        return
    output = job.sbatch.get("--output")
    if output and "/" in output and "%" not in output.rpartition("/")[0]:
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
    """The --output pattern of `stage` in `log_dir` ("%%" is Slurm's literal "%")."""
    return os.path.join(os.fspath(log_dir).replace("%", "%%"), LOG_PATTERNS[stage])


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
