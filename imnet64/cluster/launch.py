"""`imnet64 train --np N|auto`: start the Horovod ranks ourselves when no launcher did.

Under horovodrun, mpirun or a multi-task srun the process already is one rank, and `--np`
is ignored. Otherwise, with N > 1, this process runs

    horovodrun --gloo -np N -H localhost:N <python> -m imnet64_cli.main train <same options>

and waits. Gloo is only the control plane: on GPUs the allreduce still goes through NCCL.
`auto` is one rank per visible GPU (nvidia-smi), or 1 without GPUs.

Signals: the chosen stop signal (and SIGTERM/SIGINT) received by this launching process is
turned into RUN_DIR/stop-request, which the ranks act on (checkpoint, then exit); horovodrun
itself does not forward USR1/USR2 to its ranks. The command installs the handler before it
does anything else, and the ranks take a stop file written after this process started as
a fresh request even if it appeared while they were still starting (only an older one is
stale). horovodrun is started with the stop signal ignored (unless it is TERM or INT,
which it handles itself), so a signal sent to the whole process group does not kill it.
A signal before the ranks were started: nothing is started, exit 75.

Exit code: the ranks exit 0 after a preemption checkpoint when we launched them
(horovodrun turns any other code into 1 and a traceback); this process exits with the
requeue code when it was signalled itself (whatever the ranks did: the rerun resumes, or
finds the run finished), or when RUN_DIR/status.json says the run was preempted or
stopped during this launch.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from imnet64 import atomic
from imnet64.cluster.environment import SELF_LAUNCHED_VAR, Environment, with_variables
from imnet64.cluster.preemption import REQUEUE_EXIT_CODE, STARTED_ENV, STOP_FILE, StopRequest
from imnet64.errors import UserError

LAUNCHED_ENV = SELF_LAUNCHED_VAR


def rank_exit_code(code: int) -> int:
    """The exit code a rank should give: the requeue code becomes 0 under our own launcher,
    which passes it on itself."""
    if code == REQUEUE_EXIT_CODE and Environment.read().self_launched:
        return 0
    return code


def visible_gpus() -> int:
    """GPUs this process may use, without importing TensorFlow (nvidia-smi; honours
    CUDA_VISIBLE_DEVICES)."""
    visible = Environment.read().cuda_visible_devices
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return nvidia_smi_gpus() or 0


def nvidia_smi_gpus() -> int | None:
    """GPUs `nvidia-smi -L` lists on this node (None: no nvidia-smi, or it failed)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(line.startswith("GPU ") for line in out.splitlines())


def resolve_np(value: str | int | None) -> int:
    if value is None:
        return 1
    text = str(value).strip().lower()
    if text == "auto":
        return max(1, visible_gpus())
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"--np must be a positive number or 'auto', not {value!r}")
    return int(text)


def should_self_launch(np_: int) -> bool:
    return np_ > 1 and not Environment.read().under_launcher


def find_horovodrun() -> str | None:
    """Horovod's horovodrun: the one beside this Python (its venv), else on PATH."""
    exe = Path(sys.executable).with_name("horovodrun")
    return str(exe) if exe.exists() else shutil.which("horovodrun")


def horovodrun_command(np_: int, child_args: list[str]) -> list[str]:
    runner = find_horovodrun()
    if not runner:
        raise UserError("--np needs horovodrun (install Horovod), or start the ranks with "
                        "mpirun/srun yourself")
    if importlib.util.find_spec("horovod") is not None:
        # horovodrun, with its own TensorFlow import (a build check) through imnet64's filter
        runner_cmd = [sys.executable, "-m", "imnet64.cluster.horovodrun"]
    else:
        runner_cmd = [runner]
    return [*runner_cmd, "--gloo", "-np", str(np_), "-H", f"localhost:{np_}",
            sys.executable, "-m", "imnet64_cli.main", "train", *child_args]


def _child_setup(ignore: Iterable[signal.Signals]) -> None:
    """In the child, before it runs horovodrun: get SIGTERM when this launching process dies,
    even by SIGKILL (Linux), so horovodrun (which then stops its ranks) is not left behind
    as an orphan; and ignore the stop signals horovodrun does not handle (USR1 would kill
    it: the ranks get the request from the stop file instead)."""
    for sig in ignore:
        signal.signal(sig, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_ranks(np_: int, child_args: list[str], run_dir: Path,
              stop: StopRequest | Iterable[signal.Signals]) -> int:
    """Run the ranks under horovodrun; returns the exit code this command should give.

    `stop` is the command's stop request, installed before anything else: a signal it
    received (before or while the ranks run) becomes RUN_DIR/stop-request for them. Given
    signals instead (the first one the requeue signal), a request for them and SIGTERM and
    SIGINT is installed for the time the ranks run."""
    if not isinstance(stop, StopRequest):
        signals = list(stop)
        own = StopRequest(dict.fromkeys([*signals, signal.SIGTERM, signal.SIGINT]),
                          requeue_signal=signals[0] if signals else None)
        with own:
            return run_ranks(np_, child_args, run_dir, own)
    started = time.time()
    run_dir = Path(run_dir)

    def forward(sig: signal.Signals) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run_dir / STOP_FILE, f"{sig.name}\n")

    stop.on_signal = forward  # first: a signal after the check below reaches the ranks
    if stop.received is not None:
        stop.on_signal = None
        print(f"stop requested (signal {stop.received.name}) before the ranks were started: "
              f"nothing to checkpoint; exit {REQUEUE_EXIT_CODE} to requeue", file=sys.stderr)
        return REQUEUE_EXIT_CODE
    # the ranks exit 0 after a preemption checkpoint (horovodrun would print a traceback
    # for any other code); status.json or our own signal tell this process to exit 75.
    # STARTED_ENV: a stop file we write from now on is a request for them, not a stale one.
    env = with_variables({LAUNCHED_ENV: "1", STARTED_ENV: repr(stop.started)})
    ignore = [s for s in stop.signals if s not in (signal.SIGTERM, signal.SIGINT)]
    try:
        proc = subprocess.Popen(horovodrun_command(np_, child_args), env=env,
                                preexec_fn=partial(_child_setup, ignore))
        code = proc.wait()
    finally:
        stop.on_signal = None
    if stop.received is not None:
        return REQUEUE_EXIT_CODE
    status_path = run_dir / "status.json"
    if status_path.exists():
        status = atomic.read_json(status_path)
        if status.get("state") in ("preempted", "stopped") and status.get("time", 0) >= started:
            return REQUEUE_EXIT_CODE
    return code
