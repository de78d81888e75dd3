"""Every process one `train --np N` launch started, at any depth, found and ended.

horovodrun starts each rank through a "middleman" process in a session of its own
(horovod.runner.common.util.safe_shell_exec), so neither the launcher's process group nor
PR_SET_PDEATHSIG reaches the ranks; killed in the middle of starting 1000 ranks, they went
on starting, orphaned (issue 24). The launcher puts a fresh IMNET64_LAUNCH_ID into its
children's environment; every process they start inherits it, and Linux shows a process's
environment in /proc/PID/environ, which is how the launcher finds what is left (its own
processes only: another user's are not readable). Elsewhere than Linux nothing is found,
and the children's own handling (horovodrun's, PR_SET_PDEATHSIG) is all there is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

from imnet64.cluster.environment import LAUNCH_ID_VAR

PROC = Path("/proc")


def new_launch_id() -> str:
    return uuid.uuid4().hex


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for its parent to reap it."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def processes(launch_id: str) -> list[int]:
    """Live processes (not this one) whose environment carries `launch_id`."""
    marker = f"{LAUNCH_ID_VAR}={launch_id}".encode()
    found = []
    for entry in PROC.glob("[0-9]*"):
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and _alive(pid):
            found.append(pid)
    return found


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def end(launch_id: str, grace_s: float = 2.0, poll_s: float = 0.1) -> list[int]:
    """SIGTERM to every process of the launch still alive, SIGKILL to those left after
    `grace_s`; returns what had to be ended. Waits (a few seconds at most) until they are
    gone, so that none outlives the launcher."""
    left = processes(launch_id)
    if not left:
        return []
    ended = list(left)
    _signal_all(left, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while left and time.monotonic() < deadline:
        time.sleep(poll_s)
        left = processes(launch_id)
    for _ in range(50):  # new ones may appear while a parent is still starting them
        if not left:
            break
        _signal_all(left, signal.SIGKILL)
        time.sleep(poll_s)
        left = processes(launch_id)
    return ended
