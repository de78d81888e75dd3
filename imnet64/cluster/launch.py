"""`imnet64 train --np N|auto`: start the ranks ourselves when no launcher did.

Under horovodrun, mpirun, a multi-task srun or a TF_CONFIG the process already is one rank,
and `--np` is ignored. Otherwise, with N > 1, this process starts the ranks for the engine
and waits:

- horovod: one child, `horovodrun --gloo -np N -H localhost:N <python> -m imnet64_cli.main
  train <same options>` (Gloo is only the control plane: on GPUs the allreduce still goes
  through NCCL);
- tf: N children `<python> -m imnet64_cli.main train <same options>`, each with a TF_CONFIG
  naming N free localhost ports and its own index (tf.distribute's cluster; no launcher
  program exists for it).

`auto` is one rank per visible GPU (nvidia-smi), or 1 without GPUs.

Signals: the chosen stop signal (and SIGTERM/SIGINT) received by this launching process is
turned into RUN_DIR/stop-request, which the ranks act on (checkpoint, then exit); horovodrun
itself does not forward USR1/USR2 to its ranks. A signal while the ranks are still starting
(before rank 0 says "running" in RUN_DIR/status.json, so nothing is trained yet and nothing
to checkpoint) instead stops starting ranks and ends every process of the launch within
seconds (SIGTERM, then SIGKILL after STARTUP_GRACE_S): with many ranks, their start-up alone
takes minutes on a small machine. Every process of the launch, at any depth (horovodrun's
ranks are in sessions of their own), carries IMNET64_LAUNCH_ID in its environment, and none
outlives the launch (imnet64.cluster.launch_tree). The command installs the handler before it
does anything else, and the ranks take a stop file written after this process started as
a fresh request even if it appeared while they were still starting (only an older one is
stale). The children are started with the stop signal ignored (unless it is TERM or INT:
horovodrun handles those itself, and a tf rank installs its own handlers first thing), so a
signal sent to the whole process group does not kill one that is still starting. Every child
gets SIGTERM when this process dies, even by SIGKILL. A signal before the ranks were started:
nothing is started, exit 75.

Exit code: the ranks exit 0 after a preemption checkpoint when we launched them
(horovodrun turns any other code into 1 and a traceback); this process exits with the
requeue code when it was signalled itself (whatever the ranks did: the rerun resumes, or
finds the run finished), or when RUN_DIR/status.json says the run was preempted or
stopped during this launch. A tf rank that fails ends its peers (which would otherwise wait
for it in their next collective forever) and gives the exit code; horovodrun does the same
for its ranks.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from imnet64 import atomic
from imnet64.cluster import launch_tree
from imnet64.cluster.environment import (
    LAUNCH_ID_VAR,
    SELF_LAUNCHED_VAR,
    Environment,
    with_variables,
)
from imnet64.cluster.preemption import REQUEUE_EXIT_CODE, STARTED_ENV, STOP_FILE, StopRequest
from imnet64.cluster.rank_death import record_rank_death
from imnet64.errors import UserError

LAUNCHED_ENV = SELF_LAUNCHED_VAR
# after a tf rank failed: how long its peers get to end on SIGTERM before SIGKILL
PEER_GRACE_S = 10.0
# after a signal during the ranks' start-up: how long they get to end on SIGTERM (horovodrun
# ends its own ranks in this time) before SIGKILL; they hold nothing to save yet
STARTUP_GRACE_S = 3.0


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
        raise UserError("--np needs horovodrun (install Horovod), or --engine tf, or start "
                        "the ranks with mpirun/srun yourself")
    if importlib.util.find_spec("horovod") is not None:
        # horovodrun, with its own TensorFlow import (a build check) through imnet64's filter
        runner_cmd = [sys.executable, "-m", "imnet64.cluster.horovodrun"]
    else:
        runner_cmd = [runner]
    return [*runner_cmd, "--gloo", "-np", str(np_), "-H", f"localhost:{np_}",
            *train_command(child_args)]


def train_command(child_args: list[str]) -> list[str]:
    """`imnet64 train ARGS` with this Python."""
    return [sys.executable, "-m", "imnet64_cli.main", "train", *child_args]


def free_local_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on localhost now (the kernel's picks; all held open
    until every one is chosen, so none repeats)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in socks]


def local_tf_configs(np_: int) -> list[str]:
    """One TF_CONFIG per rank for `np_` tf.distribute workers on this machine."""
    workers = [f"localhost:{port}" for port in free_local_ports(np_)]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker",
                                                                  "index": rank}})
            for rank in range(np_)]


@dataclass(frozen=True)
class Child:
    """One process the launcher starts: its command and what it adds to the environment."""

    command: list[str]
    env: dict[str, str] = field(default_factory=dict)


def rank_children(engine: str, np_: int, child_args: list[str]) -> list[Child]:
    """What to start for `np_` local ranks of `engine`: horovodrun once, or each tf rank."""
    if engine == "tf":
        return [Child(train_command(child_args), {"TF_CONFIG": config})
                for config in local_tf_configs(np_)]
    return [Child(horovodrun_command(np_, child_args))]


def _child_setup(ignore: Iterable[signal.Signals]) -> None:
    """In a child, before it runs horovodrun or a tf rank: get SIGTERM when this launching
    process dies, even by SIGKILL (Linux), so no child is left behind as an orphan
    (horovodrun then stops its ranks; a tf rank checkpoints and exits); and ignore the stop
    signals horovodrun does not handle (USR1 would kill it, or a tf rank still starting: the
    ranks get the request from the stop file instead)."""
    for sig in ignore:
        signal.signal(sig, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _end(procs: Sequence[subprocess.Popen], grace_s: float = PEER_GRACE_S) -> None:
    """SIGTERM to the children still running, SIGKILL to those not gone after `grace_s`."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_all(procs: Sequence[subprocess.Popen], poll_s: float = 0.2,
             give_up: Callable[[], bool] | None = None) -> int | None:
    """Wait for every child: 0 when all exit 0, else the first failure's code (its peers are
    ended then: they would wait for the failed one in their next collective forever).
    None as soon as `give_up()` says so (the children are left to the caller)."""
    while True:
        codes = [p.poll() for p in procs]
        failure = next((c for c in codes if c), 0)  # None (running) and 0 are not
        if failure:
            _end(procs)
            return failure
        if all(c == 0 for c in codes):
            return 0
        if give_up is not None and give_up():
            return None
        time.sleep(poll_s)


def training_started(run_dir: Path, since: float) -> bool:
    """Rank 0 has said "running" (or ended) in RUN_DIR/status.json since `since`: every rank
    is past its start-up, and a stop request from now on is answered with a checkpoint."""
    try:
        status = json.loads((run_dir / "status.json").read_text("utf-8"))
        return float(status.get("time", 0)) >= since
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def _who_failed(procs: Sequence[subprocess.Popen], code: int, engine: str) -> str:
    if engine != "tf":
        return "a rank (horovodrun reports it above)"
    rank = next((i for i, p in enumerate(procs) if p.returncode == code), None)
    return f"rank {rank}" if rank is not None else "a rank"


def _remove_own_stop_file(run_dir: Path, since: float) -> None:
    """Remove RUN_DIR's stop file if this launch wrote it (written since `since`)."""
    path = run_dir / STOP_FILE
    with contextlib.suppress(OSError):
        if path.stat().st_mtime >= since:
            path.unlink()


def run_ranks(np_: int, child_args: list[str], run_dir: Path,
              stop: StopRequest | Iterable[signal.Signals], engine: str = "horovod",
              keep_fds: Sequence[int] = ()) -> int:
    """Run the ranks of `engine` (horovodrun, or one process per tf rank); returns the exit
    code this command should give.

    `stop` is the command's stop request, installed before anything else: a signal it
    received (before or while the ranks run) becomes RUN_DIR/stop-request for them. Given
    signals instead (the first one the requeue signal), a request for them and SIGTERM and
    SIGINT is installed for the time the ranks run. `keep_fds`: descriptors the children
    inherit (RUN_DIR's lock)."""
    if not isinstance(stop, StopRequest):
        signals = list(stop)
        own = StopRequest(dict.fromkeys([*signals, signal.SIGTERM, signal.SIGINT]),
                          requeue_signal=signals[0] if signals else None)
        with own:
            return run_ranks(np_, child_args, run_dir, own, engine, keep_fds)
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
    launch_id = launch_tree.new_launch_id()
    launched = {LAUNCHED_ENV: "1", STARTED_ENV: repr(stop.started), LAUNCH_ID_VAR: launch_id}
    ignore = [s for s in stop.signals if s not in (signal.SIGTERM, signal.SIGINT)]
    procs: list[subprocess.Popen] = []

    def stopped_while_starting() -> bool:
        return stop.received is not None and not training_started(run_dir, started)

    try:
        for child in rank_children(engine, np_, child_args):
            if stop.received is not None:
                break  # a signal while starting them: start no more
            procs.append(subprocess.Popen(child.command,
                                          env=with_variables({**launched, **child.env}),
                                          pass_fds=tuple(keep_fds),
                                          preexec_fn=partial(_child_setup, ignore)))
        code = wait_all(procs, give_up=stopped_while_starting)
        if code is None:
            received = stop.received.name if stop.received else "?"
            print(f"stop requested (signal {received}) while the ranks were starting: "
                  f"ending them (nothing trained yet); exit {REQUEUE_EXIT_CODE} to requeue",
                  file=sys.stderr, flush=True)
            _end(procs, STARTUP_GRACE_S)
            launch_tree.end(launch_id, STARTUP_GRACE_S)
            # the request was for the ranks just ended: the stop file forward() wrote must
            # not stop the rerun, which may start within the staleness margin of it
            _remove_own_stop_file(run_dir, started)
            return REQUEUE_EXIT_CODE
    finally:
        stop.on_signal = None
        _end(procs)  # nothing outlives the launch (an exception or a second Ctrl-C included)
        launch_tree.end(launch_id)  # nor what the children started (horovodrun's ranks)
    if stop.received is not None:
        return REQUEUE_EXIT_CODE
    if code:  # a rank killed (SIGKILL, OOM) cannot say so itself
        record_rank_death(run_dir, started, _who_failed(procs, code, engine), code)
    status_path = run_dir / "status.json"
    if status_path.exists():
        status = atomic.read_json(status_path)
        if status.get("state") in ("preempted", "stopped") and status.get("time", 0) >= started:
            return REQUEUE_EXIT_CODE
    return code
