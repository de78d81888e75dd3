"""Preemption: a signal (or a stop file) -> finish the step -> checkpoint -> exit to be requeued.

How a stop is requested, on any rank:
- the signal chosen with `--signal` (default SIGUSR1; NCCL is known to catch USR1, so
  USR2 or TERM can be picked), e.g. from Slurm's `#SBATCH --signal=USR1@120`;
- or the file `RUN_DIR/stop-request` appearing (checked by rank 0; `touch` it by hand, and
  `imnet64 train --np N` writes it when the launching process gets the signal).
The flag is OR-ed across ranks inside each training step, so all ranks stop after the same
step even if only one of them got the signal. Rank 0 then writes a checkpoint, all ranks
meet at a barrier, and every rank exits with REQUEUE_EXIT_CODE.

REQUEUE_EXIT_CODE = 75 is EX_TEMPFAIL from sysexits.h ("temporary failure, the user is
invited to retry"): the batch script requeues the job when it sees it, and the rerun of the
same command resumes from the checkpoint.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

from imnet64.errors import UserError

REQUEUE_EXIT_CODE = 75
STOP_FILE = "stop-request"
DEFAULT_SIGNAL = "USR1"


def parse_signal(name: str | int) -> signal.Signals:
    """"USR1", "SIGUSR1", "usr1" or "10" -> signal.SIGUSR1."""
    text = str(name).strip().upper()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError) as e:
        raise UserError(f"unknown signal {name!r} (e.g. USR1, USR2, TERM)") from e


class StopRequest:
    """Set by a signal handler or a stop file; `requested` is this process's local view.

    Use as a context manager: installs the handlers, and restores the previous ones on exit.
    """

    def __init__(self, signals: list[signal.Signals], stop_file: Path | None = None):
        self.signals = signals
        self.stop_file = stop_file
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # Only set a flag: the training loop acts on it between steps.
        self.received = signal.Signals(signum)

    def __enter__(self) -> StopRequest:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        if self.received is not None:
            return True
        return self.stop_file is not None and self.stop_file.exists()

    @property
    def reason(self) -> str:
        if self.received is not None:
            return f"signal {self.received.name}"
        return f"stop file {self.stop_file}" if self.stop_file else "stop requested by a peer"
