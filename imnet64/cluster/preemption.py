"""Preemption: a signal (or a stop file) -> finish the step -> checkpoint -> exit to be requeued.

How a stop is requested, on any rank:
- the signal chosen with `--signal` (default SIGUSR1; NCCL is known to catch USR1, so
  USR2 or TERM can be picked), e.g. from Slurm's `#SBATCH --signal=USR1@120`;
- SIGTERM or SIGINT (a `kill`, `scancel`, Ctrl-C): the same, but status.json then says
  "stopped" instead of "preempted"; a second SIGINT stops at once (KeyboardInterrupt);
- or the file `RUN_DIR/stop-request` appearing (checked by rank 0; `touch` it by hand, and
  `imnet64 train --np N` writes it when the launching process gets a signal). A stop file
  older than the command's start is a stale one and is removed instead.
The flag is OR-ed across ranks inside each training step, so all ranks stop after the same
step even if only one of them got the signal. Rank 0 then writes a checkpoint, all ranks
meet at a barrier, and every rank exits with REQUEUE_EXIT_CODE.

`imnet64 train` installs the handlers first thing, before TensorFlow is imported, so a
signal during start-up is not lost: the trainer finds the flag set and stops before its
first step (nothing trained, nothing to checkpoint, still exit 75).

REQUEUE_EXIT_CODE = 75 is EX_TEMPFAIL from sysexits.h ("temporary failure, the user is
invited to retry"): the batch script requeues the job when it sees it, and the rerun of the
same command resumes from the checkpoint.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType

from imnet64.cluster.environment import STARTED_AT_VAR, Environment
from imnet64.errors import UserError

REQUEUE_EXIT_CODE = 75
STOP_FILE = "stop-request"
DEFAULT_SIGNAL = "USR1"
# the launching process's start time, for ranks it starts (a stop file it wrote while they
# were starting is not stale)
STARTED_ENV = STARTED_AT_VAR
# a file's mtime comes from the kernel's coarse clock, which lags time.time() by up to a tick
STALE_MARGIN_S = 1.0


# SIGKILL and SIGSTOP cannot be caught, blocked or ignored (signal(7)): no rank could
# checkpoint on them, and Python refuses a handler for them (OSError: Invalid argument).
UNCATCHABLE = (signal.SIGKILL, signal.SIGSTOP)


def parse_signal(name: str | int) -> signal.Signals:
    """"USR1", "SIGUSR1", "usr1" or "10" -> signal.SIGUSR1 (never KILL or STOP)."""
    text = str(name).strip().upper()
    try:
        if text.isdigit():
            sig = signal.Signals(int(text))
        else:
            sig = signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError) as e:
        raise UserError(f"unknown signal {name!r} (e.g. USR1, USR2, TERM)") from e
    return check_catchable(sig)


def check_catchable(sig: signal.Signals) -> signal.Signals:
    """`sig` unless it is one no process can catch."""
    if sig in UNCATCHABLE:
        raise UserError(f"{sig.name} cannot be caught (the kernel ends or stops the process "
                        "without telling it, so nothing could checkpoint): choose USR1, USR2 "
                        "or TERM")
    return sig


def stop_signals(requeue: signal.Signals) -> list[signal.Signals]:
    """The signals that stop training: the requeue signal (--signal), SIGTERM and SIGINT."""
    return list(dict.fromkeys([requeue, signal.SIGTERM, signal.SIGINT]))


def _started_at() -> float:
    started = Environment.read().started_at
    return time.time() if started is None else started


class StopRequest:
    """Set by a signal handler or a stop file; `requested` is this process's local view.

    Use as a context manager (or `install()`/`uninstall()`): installs the handlers, and
    restores the previous ones when the outermost `with` ends (nesting is allowed, so the
    command can install it first thing and the trainer use the same object).
    `on_signal`, if set, is also called (in the main thread) with each signal received.
    """

    def __init__(self, signals: Iterable[signal.Signals], stop_file: Path | None = None, *,
                 requeue_signal: signal.Signals | None = None, started: float | None = None):
        self.signals = list(signals)
        self.requeue_signal = requeue_signal or (self.signals[0] if self.signals else None)
        self.stop_file = stop_file
        self.started = _started_at() if started is None else started
        self.received: signal.Signals | None = None
        self.on_signal: Callable[[signal.Signals], None] | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._depth = 0

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # Only set a flag: the training loop acts on it between steps.
        sig = signal.Signals(signum)
        if sig == signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt  # Ctrl-C again: the user does not want to wait
        if self.received is None:
            self.received = sig
        if self.on_signal is not None:
            self.on_signal(sig)

    def install(self) -> StopRequest:
        if self._depth == 0:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        self._depth += 1
        return self

    def uninstall(self) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            self._previous.clear()

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def discard_stale_stop_file(self) -> bool:
        """Remove a stop file written before this command started (a request nobody consumed,
        e.g. from a run killed meanwhile). Returns True if one was removed."""
        if self.stop_file is None:
            return False
        try:
            if self.stop_file.stat().st_mtime >= self.started - STALE_MARGIN_S:
                return False
        except FileNotFoundError:
            return False
        self.stop_file.unlink(missing_ok=True)
        return True

    @property
    def requested(self) -> bool:
        if self.received is not None:
            return True
        return self.stop_file is not None and self.stop_file.exists()

    @property
    def reason(self) -> str:
        if self.received is not None:
            return f"signal {self.received.name}"
        if self.stop_file is not None:
            try:
                what = self.stop_file.read_text("utf-8", errors="replace").strip()
            except OSError:
                what = ""
            return f"stop file {self.stop_file}" + (f" ({what[:40]})" if what else "")
        return "stop requested by a peer"

    @property
    def state(self) -> str:
        """status.json's word for it: "preempted" for the requeue signal or a stop file,
        "stopped" for another signal (SIGTERM, SIGINT)."""
        if self.received is None or self.received == self.requeue_signal:
            return "preempted"
        return "stopped"
