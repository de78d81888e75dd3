"""Render the Slurm templates (slurm/*.sh) with options, and submit them with sbatch.

Rendering edits the template's text: an `#SBATCH --name=value` line is replaced when the
template has one and added after the last `#SBATCH` line otherwise, and settings become
`export IMNET64_...=value` lines after the `#SBATCH` block. The rendered script is what
`sbatch` receives on stdin, so `--dry-run` shows exactly what would run; once submitted,
that script is also saved beside the job's logs as `<job name>-<job id>.sbatch`.

Every option value is checked here before it reaches the script (see "Checking what goes
into the script" below): a value that could add a command or an sbatch option is refused
with a one-line UserError naming the option, and `render` checks again.

Nothing here imports click or TensorFlow; errors the user can fix are UserError.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from imnet64 import atomic
from imnet64.cluster import job_consistency
from imnet64.cluster.engines import check_engine
from imnet64.cluster.environment import Environment
from imnet64.errors import UserError

STAGES = ("label", "shard", "train")
# the largest --max-restarts train.sh takes (18 digits: bash compares signed 64-bit integers
# and reports larger ones as "integer expression expected", then requeued anyway)
MAX_RESTARTS_LIMIT = 10**18 - 1
TEMPLATE_FILES = {"label": "label.sh", "shard": "shard.sh", "train": "train.sh"}
# Per-task log names: an array job has one log per task; train's log spans requeues.
LOG_PATTERNS = {"label": "%x-%A_%a.log", "shard": "%x-%j.log", "train": "%x-%j.log"}
_SBATCH_LINE = re.compile(r"^#SBATCH\s+(--[A-Za-z0-9-]+)(?:[=\s]\s*(.*?))?\s*$")


# -- checking what goes into the script -----------------------------------------------
#
# Values reach the job script in two places:
# - `#SBATCH --name=value` lines. sbatch reads them with its own tokenizer (_get_argument
#   in Slurm's src/sbatch/opt.c): whitespace separates arguments, quotes and backslashes
#   are consumed, an unquoted `#` starts a comment, "packjob"/"hetjob" anywhere in the line
#   splits the job into heterogeneous components, and directives end at the first line
#   that is not a comment. So a newline would start a command (and hide every later
#   #SBATCH line), a space would add another sbatch option. Directive values are kept to
#   a plain ASCII set, and options with a Slurm grammar must match it.
# - `export IMNET64_X=value` lines: shlex.quote makes any text one literal word for bash,
#   and the templates only ever use these values quoted or split into words by `read -r -a`.
# No value may hold a control character (C0, DEL, C1), a Unicode line or paragraph
# separator, or a bidirectional-text control (which makes a script read differently from
# what runs), wherever it goes.

_CHAR_NAMES = {"\n": "newline", "\r": "carriage return", "\t": "tab", "\0": "NUL",
               "\x1b": "escape", "\x7f": "delete", "\x85": "next line"}
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")
# Characters a directive value may hold: none that sbatch's tokenizer treats specially
# (space, quotes, backslash, #) and none of the shell's ($ ` ;), though no shell reads it.
_DIRECTIVE_CHARS = re.compile(r"[A-Za-z0-9_.,:=@%+/~^&|!*?()\[\]{}<>-]")
_DIRECTIVE_ALLOWED = "letters, digits and _.,:=@%+/~^&|!*?()[]{}<>-"
_HETJOB = re.compile("packjob|hetjob", re.IGNORECASE)
_SBATCH_OPTION = re.compile(r"--[A-Za-z][A-Za-z0-9-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = r"[A-Za-z0-9_.-]+"
_TIME = re.compile(r"[0-9]+(?::[0-9]+){0,2}|[0-9]+-[0-9]+(?::[0-9]+){0,2}|UNLIMITED|INFINITE",
                   re.IGNORECASE)
TIME_FORMATS = ("minutes, minutes:seconds, hours:minutes:seconds, days-hours, "
                "days-hours:minutes, days-hours:minutes:seconds, or UNLIMITED")


def _describe(char: str) -> str:
    name = _CHAR_NAMES.get(char) or unicodedata.name(char, "").lower()
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS


def check_text(option: str, value: str) -> str:
    """`value` unless it holds a control character (any option, any destination)."""
    for char in value:
        if _is_control(char):
            kind = "control character" if unicodedata.category(char) == "Cc" else "character"
            raise UserError(f"{option} {value!r}: {kind} {_describe(char)} is not allowed")
    return value


def check_directive(option: str, value: str) -> str:
    """`value` if it can stand in an `#SBATCH --name=value` line as exactly one argument."""
    check_text(option, value)
    for char in value:
        if _DIRECTIVE_CHARS.fullmatch(char):
            continue
        if char.isspace():
            why = f"whitespace {_describe(char)} would split it into more sbatch options"
        elif char in "'\"\\":
            why = f"sbatch reads {char!r} in an #SBATCH line as quoting"
        elif char == "#":
            why = "sbatch reads '#' in an #SBATCH line as the start of a comment"
        else:
            why = f"{char!r} is not allowed in an #SBATCH line (allowed: {_DIRECTIVE_ALLOWED})"
        raise UserError(f"{option} {value!r}: {why}")
    found = _HETJOB.search(value)
    if found:
        raise UserError(f"{option} {value!r}: sbatch reads {found.group(0)!r} in an #SBATCH "
                        "line as a heterogeneous-job separator")
    return value


def _check_grammar(option: str, value: str, pattern: str | re.Pattern, what: str) -> str:
    check_directive(option, value)
    if not re.fullmatch(pattern, value):
        raise UserError(f"{option} {value!r}: {what}")
    return value


def check_time(option: str, value: str) -> str:
    """A Slurm time limit as sbatch(1) --time takes it."""
    return _check_grammar(option, value, _TIME, f"not a Slurm time limit ({TIME_FORMATS})")


def check_partition(option: str, value: str) -> str:
    return _check_grammar(option, value, rf"{_NAME}(?:,{_NAME})*",
                          "partition names are letters, digits and _.- (a list: comma-"
                          "separated)")


def check_name(option: str, value: str) -> str:
    """An account or QOS name."""
    return _check_grammar(option, value, _NAME, "expected one name of letters, digits and _.-")


def check_job_name(option: str, value: str) -> str:
    # no "/": the name becomes part of the log file name (%x)
    return _check_grammar(option, value, r"[A-Za-z0-9_.+,:@=-]+",
                          "job names are letters, digits and _.+,:@=- here")


def check_signal_spec(option: str, value: str) -> str:
    """sbatch --signal: [{R|B}:]<sig_num|name>[@sig_time], of a signal that can be caught."""
    _check_grammar(option, value,
                   re.compile(r"(?:[RB]{1,2}:)?(?:[0-9]+|(?:SIG)?[A-Z][A-Z0-9]*)"
                              r"(?:@[0-9]+)?", re.IGNORECASE),
                   "expected [B:]SIGNAL[@SECONDS], e.g. B:USR1@120")
    sig = job_consistency.signal_spec_signal(value)
    if sig is not None:
        from imnet64.cluster.preemption import check_catchable

        try:
            check_catchable(sig)
        except UserError as e:
            raise UserError(f"{option} {value!r}: {e}") from None
    return value


# sbatch options whose values have a grammar of their own (also via --sbatch-arg)
_SBATCH_GRAMMARS = {"--partition": check_partition, "--account": check_name,
                    "--qos": check_name, "--time": check_time, "--time-min": check_time,
                    "--job-name": check_job_name, "--signal": check_signal_spec}


def parse_count(option: str, text: str) -> int:
    """An option's whole number, from the command line's text (ASCII digits only)."""
    check_text(option, text)
    if not re.fullmatch(r"[0-9]+", text):
        raise UserError(f"{option} {text!r}: expected a whole number (e.g. 4)")
    return int(text)


def check_count(option: str, value: object, minimum: int = 0) -> int:
    """`value` if it is a whole number (an int, not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{option} {value!r}: expected a whole number (e.g. 4)")
    if value < minimum:
        raise UserError(f"{option} must be at least {minimum} (got {value})")
    return value


def parse_sbatch_arg(arg: str, option: str = "--sbatch-arg") -> tuple[str, str]:
    """"--name=value" or "--flag" -> (name, value), checked like the options imnet64 sets."""
    check_text(option, arg)
    name, sep, value = arg.partition("=")
    if not _SBATCH_OPTION.fullmatch(name):
        raise UserError(f"{option} {arg!r}: takes long sbatch options like --qos=high, named "
                        "with letters, digits and -")
    if sep and not value:
        raise UserError(f"{option} {arg!r}: empty value (for a flag, leave out the =)")
    if _HETJOB.search(name):
        raise UserError(f"{option} {arg!r}: sbatch reads {_HETJOB.search(name).group(0)!r} in "
                        "an #SBATCH line as a heterogeneous-job separator")
    if value:
        check = _SBATCH_GRAMMARS.get(name, check_directive)
        try:
            check(option, value)
        except UserError as e:
            # name the whole argument, not only its value
            raise UserError(str(e).replace(f"{option} {value!r}", f"{option} {arg!r}", 1)) \
                from None
    return name, value


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


def _check_settings(sbatch: dict[str, str | None], env: dict[str, str]) -> None:
    """What `render` writes, checked again whoever built the Job (defence in depth)."""
    for name, value in sbatch.items():
        if not _SBATCH_OPTION.fullmatch(name) or _HETJOB.search(name):
            raise UserError(f"sbatch option {name!r}: expected --name of letters, digits and -")
        if value:
            check_directive(name, value)
    for key, value in env.items():
        if not _ENV_NAME.fullmatch(key):
            raise UserError(f"setting {key!r}: not a variable name")
        check_text(key, str(value))


def render(text: str, sbatch: dict[str, str | None], env: dict[str, str]) -> str:
    """`text` with #SBATCH options set (value "" = a bare flag, None = drop the line) and
    `export` lines for `env` after the #SBATCH block."""
    _check_settings(sbatch, env)
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
            sbatch[name] = _SBATCH_GRAMMARS[name](option, value)
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


def label_job(common: Common, *, input_path: str | None = None, label_dir: str | None = None,
              teacher: str | None = None, shards: int | None = None,
              only: list[int] | None = None, max_parallel: int | None = None,
              args: str | None = None, gpus_per_task: int | None = None,
              cpus_per_task: int | None = None, mem_per_task: str | None = None) -> Job:
    """The label array: shards 0..N-1, or only the shard indexes in `only`; each task with
    the GPUs, CPUs and memory asked for (else the template's, see slurm/label.sh)."""
    job = _base("label", common)
    if gpus_per_task is not None:  # 0: drop the request (a CPU partition refuses any)
        job.sbatch["--gpus-per-task"] = str(check_count("--gpus-per-task", gpus_per_task)) \
            if gpus_per_task else None
    if cpus_per_task is not None:
        job.sbatch["--cpus-per-task"] = str(check_count("--cpus-per-task", cpus_per_task, 1))
    if mem_per_task is not None:
        job.sbatch["--mem"] = job_consistency.check_memory(
            "--mem-per-task", check_directive("--mem-per-task", mem_per_task))
    if any(k in job.sbatch for k in ("--mem-per-cpu", "--mem-per-gpu")):
        job.sbatch.setdefault("--mem", None)  # sbatch takes only one of them
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
    _export_paths(job, (("IMNET64_INPUT", "--input", input_path),
                        ("IMNET64_LABEL_DIR", "--label-dir", label_dir)))
    if teacher:
        # a TF Hub URL or "offline" stays as given; a local folder becomes absolute
        check_text("--teacher", teacher)
        job.env["IMNET64_TEACHER"] = _abs(teacher) if os.path.exists(teacher) else teacher
    if args:
        job.env["IMNET64_LABEL_ARGS"] = check_text("--label-args", args)
    return job


def shard_job(common: Common, *, label_dir: str | None = None, dataset: str | None = None,
              ntasks: int | None = None, args: str | None = None) -> Job:
    job = _base("shard", common)
    if ntasks is not None:
        if ntasks < 1:
            raise UserError(f"--ntasks must be at least 1 (got {ntasks})")
        job.sbatch["--ntasks"] = str(ntasks)
    _export_paths(job, (("IMNET64_LABEL_DIR", "--label-dir", label_dir),
                        ("IMNET64_DATASET", "--dataset", dataset)))
    if args:
        job.env["IMNET64_SHARD_ARGS"] = check_text("--shard-args", args)
    return job


def train_job(common: Common, *, dataset: str | None = None, run_dir: str | None = None,
              nodes: int | None = None, ntasks_per_node: int | None = None,
              gpus_per_node: int | None = None, signal: str | None = None,
              signal_time: int | None = None, args: str | None = None,
              max_restarts: int | None = None, engine: str | None = None,
              allow_gpu_mismatch: bool = False) -> Job:
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
    gpus = job_consistency.gpu_count(job.sbatch.get("--gpus-per-node"))
    if gpus and "--ntasks-per-node" not in job.sbatch:
        job.sbatch["--ntasks-per-node"] = str(gpus)  # one rank per GPU
    job.checks.append(partial(job_consistency.check_ranks_match_gpus,
                              allowed=allow_gpu_mismatch))
    if signal is not None:
        from imnet64.cluster.preemption import parse_signal

        check_text("--signal", signal)
        try:
            parsed = parse_signal(signal)
        except UserError as e:
            raise UserError(f"--signal {signal!r}: {e}") from None
        job.env["IMNET64_SIGNAL"] = parsed.name.removeprefix("SIG")
    if signal_time is not None:
        if signal_time < 1:
            raise UserError(f"--signal-time must be at least 1 second (got {signal_time})")
        job.sbatch["--signal"] = f"B:USR1@{signal_time}"
    job.checks.append(partial(
        job_consistency.check_signal_before_time_limit,
        signal_option="--signal-time" if signal_time is not None else
        "--sbatch-arg --signal" if "--signal" in job.sbatch else "the template's signal time"))
    _export_paths(job, (("IMNET64_DATASET", "--dataset", dataset),
                        ("IMNET64_RUN_DIR", "--run-dir", run_dir)))
    if max_restarts is not None:
        check_count("--max-restarts", max_restarts)
        if max_restarts > MAX_RESTARTS_LIMIT:  # train.sh compares it with bash's `[ -ge ]`
            raise UserError(f"--max-restarts must be at most {MAX_RESTARTS_LIMIT} (what "
                            f"slurm/train.sh can compare; got {max_restarts})")
        job.env["IMNET64_MAX_RESTARTS"] = str(max_restarts)
    if engine is not None:
        job.env["IMNET64_ENGINE"] = check_engine("--engine", check_text("--engine", engine))
    if args:
        job.env["IMNET64_TRAIN_ARGS"] = check_text("--train-args", args)
    return job
