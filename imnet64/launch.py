"""`imnet64 train --np N|auto`: start the Horovod ranks ourselves when no launcher did.

Under horovodrun, mpirun or a multi-task srun the process already is one rank, and `--np`
is ignored. Otherwise, with N > 1, this process runs

    horovodrun --gloo -np N -H localhost:N <python> -m imnet64_cli.main train <same options>

and waits. Gloo is only the control plane: on GPUs the allreduce still goes through NCCL.
`auto` is one rank per visible GPU (nvidia-smi), or 1 without GPUs.

Signals: the chosen stop signal (and SIGTERM/SIGINT) received by this launching process is
turned into RUN_DIR/stop-request, which the ranks act on (checkpoint, then exit); horovodrun
itself does not forward USR1/USR2 to its ranks. Exit code: the ranks exit 0 after a
preemption checkpoint when we launched them (horovodrun turns any other code into 1 and a
traceback), and this process exits with the requeue code when RUN_DIR/status.json says
the run was preempted during this launch.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from imnet64 import atomic
from imnet64.errors import UserError
from imnet64.preemption import REQUEUE_EXIT_CODE, STOP_FILE
from imnet64.world import under_launcher

LAUNCHED_ENV = "IMNET64_SELF_LAUNCHED"


def rank_exit_code(code: int) -> int:
    """The exit code a rank should give: the requeue code becomes 0 under our own launcher,
    which passes it on itself."""
    if code == REQUEUE_EXIT_CODE and os.environ.get(LAUNCHED_ENV) == "1":
        return 0
    return code


def visible_gpus() -> int:
    """GPUs this process may use, without importing TensorFlow (nvidia-smi; honours
    CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
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
    return np_ > 1 and not under_launcher()


def horovodrun_command(np_: int, child_args: list[str]) -> list[str]:
    exe = Path(sys.executable).with_name("horovodrun")
    runner = str(exe) if exe.exists() else shutil.which("horovodrun")
    if not runner:
        raise UserError("--np needs horovodrun (install Horovod), or start the ranks with "
                        "mpirun/srun yourself")
    return [runner, "--gloo", "-np", str(np_), "-H", f"localhost:{np_}",
            sys.executable, "-m", "imnet64_cli.main", "train", *child_args]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when this launching process dies, even by SIGKILL (Linux),
    so horovodrun (which then stops its ranks) is not left behind as an orphan."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_ranks(np_: int, child_args: list[str], run_dir: Path,
              stop_signals: list[signal.Signals]) -> int:
    """Run the ranks under horovodrun; returns the exit code this command should give."""
    started = time.time()
    run_dir = Path(run_dir)
    # the ranks exit 0 after a preemption checkpoint (horovodrun would print a traceback
    # for any other code); status.json tells this process to exit with the requeue code
    env = {**os.environ, LAUNCHED_ENV: "1"}
    proc = subprocess.Popen(horovodrun_command(np_, child_args), env=env,
                            preexec_fn=_die_with_parent)

    def forward(signum, frame):
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run_dir / STOP_FILE, f"{signal.Signals(signum).name}\n")

    handled = set(stop_signals) | {signal.SIGTERM, signal.SIGINT}
    previous = {sig: signal.signal(sig, forward) for sig in handled}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status_path = run_dir / "status.json"
    if status_path.exists():
        status = atomic.read_json(status_path)
        if status.get("state") == "preempted" and status.get("time", 0) >= started:
            return REQUEUE_EXIT_CODE
    return code
