"""A bounded, interruptible wait for a tf.distribute rank's peers (issue 24, item 10).

MultiWorkerMirroredStrategy's constructor waits in C++ for every worker of the cluster to
register, holding the GIL: with one worker missing (a TF_CONFIG naming 2 workers, only one
started) it waits forever, and Python's signal handlers never run, so SIGTERM and SIGINT are
ignored (kill -9 only). So before the strategy is made, each rank meets its peers here, in
Python: it listens on its own address's port (the one the strategy's gRPC server binds
next) and connects to every peer's until each accepts, then closes its listener. A peer
that is already further along accepts on the same port with its gRPC server. The wait
checks the stop request between attempts and gives up after `timeout_s` with one line
naming the ranks (and addresses) that did not come.

DEFAULT_TIMEOUT_S = 300: ranks of one job start within seconds of each other here (a rank
imports TensorFlow in ~5 s on these 2 cores); on a cluster the import from a loaded shared
filesystem can take a minute or two. Five minutes leaves that margin, while a worker that
never comes is reported five minutes in instead of holding the allocation until its time
limit. IMNET64_PEER_TIMEOUT (seconds) changes it, e.g. for workers started by hand.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable, Sequence

from imnet64.cluster.preemption import REQUEUE_EXIT_CODE
from imnet64.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0
POLL_S = 0.5


class StoppedWaiting(UserError):
    """A stop signal came while waiting for peers: nothing trained, exit 75 (requeue)."""

    exit_code = REQUEUE_EXIT_CODE


def timeout_from(text: str | None) -> float:
    """IMNET64_PEER_TIMEOUT's value (None: not set, the default); never a silent fallback."""
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise UserError(f"IMNET64_PEER_TIMEOUT must be a number of seconds above 0 (got "
                        f"{text!r})")
    return value


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _answers(address: str, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection(_split(address), timeout=timeout_s):
            return True
    except OSError:
        return False


def _listen(address: str) -> socket.socket:
    port = _split(address)[1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("", port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        hint = " (another process uses it)" if e.errno == errno.EADDRINUSE else ""
        raise UserError(f"this rank cannot listen on port {port} of its address {address}"
                        f"{hint}: {e.strerror or e}") from None
    return sock


def wait_for_peers(addresses: Sequence[str], rank: int, source: str,
                   timeout_s: float = DEFAULT_TIMEOUT_S,
                   stop_reason: Callable[[], str | None] | None = None) -> None:
    """Return once every other rank's address accepts a connection; UserError after
    `timeout_s` naming who did not come; StoppedWaiting as soon as `stop_reason()` says
    why to stop (a signal)."""
    if len(addresses) <= 1:
        return
    missing = {r: a for r, a in enumerate(addresses) if r != rank}
    deadline = time.monotonic() + timeout_s
    listener = _listen(addresses[rank])
    said = False
    try:
        while True:
            for r, address in list(missing.items()):
                if _answers(address):
                    del missing[r]
            if not missing:
                return
            who = ", ".join(f"rank {r} ({a})" for r, a in sorted(missing.items()))
            if not said:
                log.info("rank %d: waiting up to %g s for its peers (%s)", rank, timeout_s, who)
                said = True
            reason = stop_reason() if stop_reason else None
            if reason:
                raise StoppedWaiting(f"stop requested ({reason}) while rank {rank} waited for "
                                     f"its peers ({who} not there): nothing trained; exit "
                                     f"{REQUEUE_EXIT_CODE}")
            if time.monotonic() >= deadline:
                raise UserError(
                    f"rank {rank} waited {timeout_s:g} s for the {len(addresses)} workers of "
                    f"{source}: {who} did not come; start every worker, or set "
                    "IMNET64_PEER_TIMEOUT (seconds) to wait longer")
            time.sleep(POLL_S)
    finally:
        with contextlib.suppress(OSError):
            listener.close()
