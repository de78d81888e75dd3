"""Values of one Slurm job that are each valid but contradict each other, checked on the
script exactly as sbatch will read it (template defaults, options and --sbatch-arg together):

- the time-limit warning (`#SBATCH --signal=B:USR1@S`) must come before the time limit
  (`--time`): with S >= the limit, the signal arrives as the job starts, the trainer
  checkpoints before its first step and the job requeues itself until --max-restarts;
- ranks per node against GPUs per node: train.sh starts one rank per task, and a rank uses
  one GPU (Horovod pins local rank % GPUs; tf.distribute one GPU per worker), so fewer ranks
  leave GPUs idle for the whole job and more make ranks share a GPU (out of memory, or NCCL
  hangs).

Also the grammar of Slurm memory sizes, GPU counts and the signal of an sbatch --signal.
Nothing here imports click; errors are UserError.
"""

from __future__ import annotations

import re
import signal

from imnet64.errors import UserError

MISMATCH_FLAG = "--allow-gpu-mismatch"
_DIRECTIVE = re.compile(r"^#SBATCH\s+(--[A-Za-z0-9-]+)(?:=(\S*))?\s*$")
# sbatch --mem: a size with an optional unit, K/M/G/T (default M); 0 means "all the memory
# of the node" to Slurm, which is never what a per-task default should say.
_MEMORY = re.compile(r"([0-9]+)([KMGT]?)", re.IGNORECASE)
_SIGNAL_SPEC = re.compile(r"(?:[RB]{1,2}:)?([^@]+)(?:@([0-9]+))?", re.IGNORECASE)


def time_limit_seconds(text: str) -> int | None:
    """A Slurm time limit in seconds; None for UNLIMITED/INFINITE. The formats of sbatch(1):
    minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes,
    days-hours:minutes:seconds."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, dash, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if dash:
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 3:
        return (parts[0] * 60 + parts[1]) * 60 + parts[2]
    return parts[0] * 60 + (parts[1] if len(parts) == 2 else 0)


def check_memory(option: str, value: str) -> str:
    """`value` if it is a Slurm memory size (e.g. 3G, 6000M, 6000) other than 0."""
    found = _MEMORY.fullmatch(value)
    if not found:
        raise UserError(f"{option} {value!r}: expected a size like 3G or 6000M (units K, M, G, "
                        "T; none means M)")
    if int(found.group(1)) == 0:
        raise UserError(f"{option} {value!r}: 0 means all of a node's memory to Slurm; give "
                        "a size like 3G")
    return value


def gpu_count(value: str | None) -> int | None:
    """The number in a --gpus-per-node value ("4", "a100:4"); None when there is none."""
    if value is None:
        return None
    found = re.fullmatch(r"(?:[A-Za-z0-9_.-]+:)?([0-9]+)", value.strip())
    return int(found.group(1)) if found else None


def directives(script: str) -> dict[str, str]:
    """`#SBATCH --name=value` lines of the leading block (a later one wins, as in sbatch)."""
    found: dict[str, str] = {}
    for line in script.splitlines():
        if line.strip() and not line.startswith("#"):
            break
        m = _DIRECTIVE.match(line)
        if m:
            found[m.group(1)] = m.group(2) or ""
    return found


def signal_spec_seconds(spec: str) -> int | None:
    """The @seconds of an sbatch --signal value (Slurm's default, 60, when absent)."""
    m = _SIGNAL_SPEC.fullmatch(spec)
    if not m:
        return None
    return int(m.group(2)) if m.group(2) else 60


def signal_spec_signal(spec: str) -> signal.Signals | None:
    m = _SIGNAL_SPEC.fullmatch(spec)
    if not m:
        return None
    name = m.group(1).upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        return None


def check_signal_before_time_limit(script: str, signal_option: str) -> None:
    """The warning signal's lead time against the time limit, as sbatch will read them.
    `signal_option` names where the lead time came from, for the message."""
    found = directives(script)
    spec, limit = found.get("--signal"), found.get("--time")
    if not spec or not limit:
        return
    lead = signal_spec_seconds(spec)
    try:
        limit_s = time_limit_seconds(limit)
    except ValueError:
        return  # not a time sbatch takes either; check_time refuses it where it comes from
    if lead is None or limit_s is None or lead < limit_s:
        return
    raise UserError(f"{signal_option} {lead} s is not shorter than the time limit {limit} "
                    f"({limit_s} s): the checkpoint signal would come as the job starts and it "
                    "would requeue itself without training; give a longer --time or a shorter "
                    "--signal-time")


def check_ranks_match_gpus(script: str, allowed: bool) -> None:
    """One rank per GPU on each node, unless `allowed` (MISMATCH_FLAG)."""
    found = directives(script)
    gpus = gpu_count(found.get("--gpus-per-node"))
    ranks_text = found.get("--ntasks-per-node")
    if allowed or not gpus or not ranks_text or not ranks_text.isdigit():
        return
    ranks = int(ranks_text)
    if ranks < gpus:
        raise UserError(f"--ntasks-per-node {ranks} with --gpus-per-node {gpus}: {gpus - ranks} "
                        f"of the {gpus} GPUs per node would sit idle (one rank per GPU); leave "
                        f"--ntasks-per-node out (it follows --gpus-per-node) or pass "
                        f"{MISMATCH_FLAG}")
    if ranks > gpus:
        raise UserError(f"--ntasks-per-node {ranks} with --gpus-per-node {gpus}: {ranks} ranks "
                        f"would share {gpus} GPU{'s' if gpus > 1 else ''} per node (out of "
                        f"memory, or NCCL hangs); ask --gpus-per-node {ranks}, or pass "
                        f"{MISMATCH_FLAG}")
