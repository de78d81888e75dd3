"""Whether a run is what its status.json says (issue 24, round 3: a "running" that is not).

status.json is rewritten by the run's writer only (rank 0, or the `train --np` launcher when
one of its ranks dies). Two ways leave it saying "running" after the writer is gone:
- kill -9 (or the OOM killer, or a node lost) of rank 0 under a launcher that is not ours
  (srun, mpirun, TF_CONFIG): nobody is left to say how it ended;
- a full disk: saying "failed" means writing a new file (status.json is written atomically),
  and there is no room for it.

Readers therefore believe a "running" status only while RUN_DIR's writer's lock
(imnet64.cluster.folder_lock, `.imnet64.lock`) has a live holder: every session that writes
status.json holds that lock for as long as it may say "running" (rank 0 under an outside
launcher, the launcher under `--np`), and the lock's record says who holds it. Live means:
on this host the recorded pid still runs (with its recorded start time, against pid reuse);
on another host its heartbeat, rewritten every 20 s by a thread of the holder, is younger
than 120 s (six missed beats: folder_lock's docstring says why that margin). Otherwise
`current()` reports the state "died", with why the writer is taken for gone. Readers never
rewrite the file: the next `train` of the run says "running" again, and logs how the
previous session ended (`note_previous_session`).

For the full disk, the trainer keeps a small reserve file in RUN_DIR while it runs
(`SpaceReserve`); when the final status cannot be written for lack of space, the reserve is
removed and the write tried once more, so status.json says "failed" with the disk error's
line. 64 KiB: a status file is under 1 KiB, but a file takes at least one block of its
filesystem (4 KiB on ext4, XFS and tmpfs; 64 KiB is also Lustre's default stripe-friendly
unit and a GPFS sub-block of a 2 MiB block), and the atomic write needs the new file while
the old one still exists. Where even the reserve could not be made (the disk was already
full), the lock rule above still makes readers report "died" once the failed session is
gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imnet64 import disk_errors
from imnet64.cluster import folder_lock
from imnet64.train import run_files

log = logging.getLogger(__name__)

DIED = "died"  # what readers report for a "running" whose writer is gone
RESERVE = ".status-reserve"
RESERVE_BYTES = 64 << 10


def writer() -> dict:
    """The fields status.json carries about its writer (host and pid, for the reader's
    message when even the lock file is gone)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


@dataclass(frozen=True)
class RunState:
    """What a run is doing, as far as a reader can tell."""

    state: str  # status.json's state, or DIED
    status: run_files.StatusRecord
    why: str | None = None  # for DIED: why its writer is taken for gone

    def line(self) -> str:
        """One line for a person: the state, where the run is, and why (or the error)."""
        s = self.status
        where = f"{s.epoch}/{s.epochs} epochs done" + (
            f", step {s.step_in_epoch}/{s.steps_per_epoch} of the next" if s.step_in_epoch
            else "")
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.time))
        if self.state == DIED:
            return (f"died: status.json says running since {since} ({where} when it started) "
                    f"but {self.why}; rerun the same train command to resume")
        if self.state == "running":  # status.json is written when the state changes only
            return f"running since {since} ({where} when it started)"
        detail = s.error or s.reason
        return f"{self.state}: {where}, at {since}" + (f"; {detail}" if detail else "")


def current(run_dir: str | Path, host: str | None = None) -> RunState | None:
    """RUN_DIR's state (None: no status.json yet); UserError for a damaged status.json."""
    status = run_files.read_status(run_dir)
    if status is None:
        return None
    if status.state != "running":
        return RunState(status.state, status)
    why = folder_lock.why_not_held(folder_lock.lock_path(run_dir), host=host)
    if why is None:
        return RunState("running", status)
    # the writer may have said how it ended and released its lock since the first read
    again = run_files.read_status(run_dir)
    if again is not None and (again.state != "running" or again.time != status.time):
        return current(run_dir, host)
    if status.host is not None and status.pid is not None and f"pid {status.pid}" not in why:
        why += f" (status.json was written by pid {status.pid} on host {status.host})"
    return RunState(DIED, status, why)


def note_previous_session(run_dir: str | Path) -> None:
    """Called by a new session that holds RUN_DIR's lock: a status.json still saying
    "running" is a session that died without saying so; log it (never an error)."""
    try:
        status = run_files.read_status(run_dir)
    except Exception:  # noqa: BLE001  (the checked reads later say what is damaged)
        return
    if status is not None and status.state == "running":
        who = f"pid {status.pid} on host {status.host}" if status.pid is not None else \
            "its writer"
        log.warning("the previous session of this run (%s) died without saying how, at epoch "
                    "%d step %d: resuming", who, status.epoch + 1, status.step_in_epoch)


class SpaceReserve:
    """RUN_DIR/.status-reserve: room to say how the run ended on a full disk."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / RESERVE
        self.held = False
        try:
            with open(self.path, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)  # real blocks: a sparse file frees nothing
                f.flush()
                os.fsync(f.fileno())
            self.held = True
        except OSError as e:  # no room even for this: the lock rule covers the reader
            log.debug("no space reserve for status.json: %s", e)
            self.drop()

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        self.held = False

    def write(self, write: Callable[[], None]) -> None:
        """Call `write` (a status.json write); if it fails for lack of space, free the
        reserve and call it once more."""
        try:
            write()
        except Exception as e:
            if not (self.held and disk_errors.is_no_space(e)):
                raise
            self.drop()
            write()


def write_status(reserve: SpaceReserve | None, write: Callable[[], None]) -> None:
    """`write()`, through `reserve` when there is one (see SpaceReserve.write)."""
    if reserve is None:
        write()
    else:
        reserve.write(write)


def failure_line(error: BaseException, run_dir: str | Path, what: str,
                 needed: Callable[[], int | None] | None = None) -> tuple[str, int] | None:
    """status.json's (error line, exit code) for a disk error ending the run: the same line
    the command prints (disk_errors). None for any other error."""
    user_error = disk_errors.as_user_error(error, run_dir, what, needed)
    if user_error is None:
        return None
    return str(user_error), user_error.exit_code
