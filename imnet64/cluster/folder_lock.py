"""One writer per output folder (issue 24, item 7): `train`'s RUN_DIR, `shard-records`' OUT_DIR
(and any part of a folder, as `label` locks its parts).

The lock is FOLDER/.imnet64.lock (FOLDER/.imnet64-<part>.lock for a part), two layers:

1. `flock` on the file, held for the writer's lifetime. The kernel releases it when the
   process dies, even by SIGKILL, so on one host a lock can never outlive its writer. The
   descriptor may be handed to child processes (`train --np`'s ranks): the lock then lasts
   until the last of them is gone.
2. A record in the file: host, pid (and the pid's start time, against pid reuse), since
   when, and a heartbeat the holder rewrites every HEARTBEAT_S. A refused writer names the
   holder from it. It also covers what flock does not: filesystems whose flock is local to
   each node (NFS mounted with local_lock, BeeGFS by default) or missing (ENOLCK, ENOSYS:
   Lustre without -o flock).

Deciding whether a recorded holder still writes:
- flock held by someone: live (whatever the record says);
- the record names this host: live if that pid runs with the recorded start time, else
  stale (flock being free already proves it dead where flock works);
- the record names another host: live while its heartbeat is younger than STALE_S. The
  holder beats every 20 s, so 120 s is six missed beats: a holder whose process is stopped
  (SIGSTOP, a suspended Slurm job) or whose filesystem hangs for two minutes could be taken
  for dead; a killed one blocks a new writer on another node for at most two minutes. The
  heartbeat is the holder's wall clock read by another node's: NTP keeps cluster nodes
  within milliseconds, far inside that margin.
A stale lock is taken over with a log line naming the old holder; a live one is never
broken: the second writer gets one line naming the holder (host, pid, since when) and
nothing is written. The holder that finds its record replaced (only possible across hosts
whose flock does not reach each other, after six missed beats) logs it and stops beating.

On release the file is removed, while still locked; a writer that got the flock on a file
no longer at its path opens the path again, so two writers never hold two files of the same
name. A killed writer's file stays (with its record) until the next writer releases it.

The whole folder and its parts exclude each other: a writer of the whole folder refuses
while a live writer holds a part lock (FOLDER/.imnet64-<part>.lock) and the reverse, and
parts of one job's ranks (`rank_part(i, n)`: "rank-i-of-n") refuse parts of another rank
count (a job of 3 ranks deals shards differently from one of 2). Each writer writes its own
record first and then looks at the others' records (`live_holder`, from the record alone:
never a flock of someone else's file, which would make that file's writer fail its own
flock for a moment), so of two writers that meet, the later one always sees the earlier;
both may refuse, never both write.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from imnet64 import disk_errors
from imnet64.errors import UserError

log = logging.getLogger(__name__)

HEARTBEAT_S = 20.0
STALE_S = 120.0
RECORD_BYTES = 1024  # the record is written in place, padded: one write, never shorter
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def lock_path(folder: str | Path, part: str | None = None) -> Path:
    return Path(folder) / (f".imnet64-{part}.lock" if part else ".imnet64.lock")


def rank_part(index: int, count: int) -> str:
    """The part a rank of a job of `count` ranks locks: parts of one count run together."""
    return f"rank-{index}-of-{count}"


_RANK_PART = re.compile(r"^\.imnet64-rank-\d+-of-(\d+)\.lock$")


def is_lock_file(name: str) -> bool:
    """A lock file's name (a folder listing must not take it for a user's file)."""
    return name.startswith(".imnet64") and name.endswith(".lock")


def _pid_started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with
    the pid it names one process, even after the pid is reused. None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock, as its record says."""

    host: str
    pid: int
    since: float
    heartbeat: float
    what: str  # the command, e.g. "train"
    token: str  # this acquisition's id
    pid_started: str | None = None

    def describe(self) -> str:
        return f"{self.what} on host {self.host}, pid {self.pid}, since {_when(self.since)}"

    def to_bytes(self) -> bytes:
        data = json.dumps(asdict(self), sort_keys=True).encode()
        if len(data) >= RECORD_BYTES:
            raise ValueError("lock record too long")
        return data + b" " * (RECORD_BYTES - 1 - len(data)) + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """None for a free lock (empty); ValueError for a record that is not one."""
        text = data.decode("utf-8", errors="replace").strip()
        if not text:
            return None
        raw = json.loads(text)
        return cls(host=str(raw["host"]), pid=int(raw["pid"]), since=float(raw["since"]),
                   heartbeat=float(raw["heartbeat"]), what=str(raw["what"]),
                   token=str(raw["token"]), pid_started=raw.get("pid_started"))


def _read_record(fd: int) -> Holder | None:
    """The record in the lock file; a few retries over a write in progress."""
    for attempt in range(5):
        try:
            return Holder.parse(os.pread(fd, RECORD_BYTES * 2, 0))
        except (ValueError, KeyError, TypeError):
            if attempt == 4:
                raise
            time.sleep(0.05)
    return None


def judge(holder: Holder, flock_free: bool | None, now: float | None = None,
          host: str | None = None, stale_s: float = STALE_S) -> str | None:
    """Why `holder`'s lock is stale (None: it is live). `flock_free`: True if we got the
    flock, None where the filesystem has no flock."""
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    if holder.host == host:
        if flock_free:
            return "its process is gone (the lock's flock was free)"
        if not _pid_alive(holder.pid):
            return f"pid {holder.pid} no longer runs on this host"
        started = _pid_started(holder.pid)
        if holder.pid_started and started and started != holder.pid_started:
            return f"pid {holder.pid} is another process now"
        return None
    age = now - holder.heartbeat
    if age > stale_s:
        return f"its last heartbeat is {age:.0f} s old (a live holder beats every " \
               f"{HEARTBEAT_S:.0f} s; stale after {stale_s:.0f} s)"
    return None


def live_holder(path: Path, host: str | None = None,
                stale_s: float = STALE_S) -> Holder | None:
    """The writer holding the lock file at `path` if it still lives, judged from its record
    alone (this host: its pid runs, with the recorded start time; another host: a heartbeat
    younger than `stale_s`). None: no lock file, a released (empty) or unreadable one, or a
    holder that is gone."""
    try:
        holder = Holder.parse(Path(path).read_bytes()[:RECORD_BYTES * 2])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if holder is None or judge(holder, flock_free=False, host=host, stale_s=stale_s):
        return None
    return holder


def why_not_held(path: Path, host: str | None = None, stale_s: float = STALE_S) -> str | None:
    """Why no live writer holds the lock at `path` (None: one does), in words for a reader
    (e.g. a status.json that still says "running")."""
    try:
        data = Path(path).read_bytes()[:RECORD_BYTES * 2]
    except FileNotFoundError:
        return f"no writer holds its lock (no {Path(path).name})"
    except OSError as e:
        return f"its lock {path} cannot be read ({e.strerror or e})"
    try:
        holder = Holder.parse(data)
    except (ValueError, KeyError, TypeError):
        return f"its lock {Path(path).name} holds no readable record"
    if holder is None:
        return f"its lock {Path(path).name} was released"
    stale = judge(holder, flock_free=False, host=host, stale_s=stale_s)
    return f"its writer ({holder.describe()}) is gone: {stale}" if stale else None


class FolderLock:
    """A held lock: `fd` (for children that must keep it), `holder`; `release()` ends it."""

    def __init__(self, path: Path, fd: int, holder: Holder, heartbeat_s: float):
        self.path, self.fd, self.holder = path, fd, holder
        self.lost = False
        # folders acquire() made for the lock, deepest first: removed again on release if
        # nothing else was written into them (a refused or failed run leaves no empty folder)
        self.created: list[Path] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,),
                                        name="folder-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                current = _read_record(self.fd)
            except (OSError, ValueError, KeyError, TypeError):
                current = None
            if current is None or current.token != self.holder.token:
                self.lost = True
                log.error("the lock %s was taken over by %s: this process no longer holds it",
                          self.path, current.describe() if current else "someone")
                return
            self.holder = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
            with contextlib.suppress(OSError):
                os.pwrite(self.fd, self.holder.to_bytes(), 0)

    def release(self) -> None:
        if self.fd < 0:
            return
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            if not self.lost:
                # removed while still locked: whoever opened it meanwhile sees it is no
                # longer the file at `path` once it gets the flock, and starts again
                os.ftruncate(self.fd, 0)
                if _same_file(self.fd, self.path):
                    self.path.unlink()
        os.close(self.fd)  # (releases the flock unless a child still has the descriptor)
        self.fd = -1
        for folder in self.created:
            with contextlib.suppress(OSError):  # not empty: something was written, keep it
                folder.rmdir()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# a releasing holder removes the lock file (and the folders it made, if empty) while another
# writer may be opening it: that writer opens it again, up to this many times
_ATTEMPTS = 20


def acquire(folder: str | Path, what: str, *, part: str | None = None,
            path: Path | None = None, heartbeat_s: float = HEARTBEAT_S,
            stale_s: float = STALE_S) -> FolderLock:
    """Take FOLDER's lock (creating FOLDER) for `what` (the command, named to a second
    writer); UserError naming the holder if another writer holds it. `part` locks a part of
    FOLDER only; `path` names the lock file outright (label's parts keep theirs)."""
    folder = Path(folder)
    path = Path(path) if path is not None else lock_path(folder, part)
    missing = _missing_folders(path.parent)
    for attempt in range(_ATTEMPTS):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            if attempt < _ATTEMPTS - 1:  # an empty folder a releasing holder removed
                continue
            raise UserError(f"cannot take the writer's lock {path}: its folder keeps "
                            "disappearing") from None
        except OSError as e:
            # a full or read-only folder is said as every writer says it (disk_errors)
            raise (disk_errors.as_user_error(e, folder, "the writer's lock")
                   or UserError(f"cannot take the writer's lock {path}: {e.strerror or e}")) \
                from None
        try:
            lock = _acquire_fd(fd, folder, path, what, heartbeat_s, stale_s)
        except BaseException:
            os.close(fd)
            raise
        if lock is not None:
            lock.created = missing
            try:
                _refuse_overlapping(lock, folder, part, path, stale_s)
            except BaseException:
                lock.release()
                raise
            return lock
        os.close(fd)  # the file was removed by its releasing holder meanwhile: again
    raise UserError(f"cannot take the writer's lock {path}: it keeps being replaced")


def _refuse_overlapping(lock: FolderLock, folder: Path, part: str | None, path: Path,
                       stale_s: float) -> None:
    """UserError naming a live writer whose lock overlaps the one just taken: the whole
    folder against any of its parts, a rank part against the whole folder and against the
    parts of another rank count (see the module's docstring)."""
    whole = lock_path(folder)
    if path == whole:
        others = sorted(p for p in folder.glob(".imnet64-*.lock") if p != whole)
    elif path == lock_path(folder, part) and part is not None:
        mine = _RANK_PART.match(path.name)
        others = [whole]
        if mine:
            others += sorted(p for p in folder.glob(".imnet64-rank-*-of-*.lock")
                             if (m := _RANK_PART.match(p.name)) and m.group(1) != mine.group(1))
    else:
        return  # a lock file named outright (label's parts): its own
    for other in others:
        holder = live_holder(other, stale_s=stale_s)
        if holder is not None and holder.token != lock.holder.token:
            what = "the whole folder" if other == whole else \
                f"its part {other.name[len('.imnet64-'):-len('.lock')]}"
            raise UserError(f"{folder} is being written by {holder.describe()} ({what}): one "
                            "writer per folder; wait for it to end, or stop it")


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _acquire_fd(fd: int, folder: Path, path: Path, what: str, heartbeat_s: float,
                stale_s: float) -> FolderLock | None:
    """The lock on `fd`, UserError if held by another, None if the file at `path` is no
    longer the one opened (its holder removed it on release: open it again)."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flock_free: bool | None = True
    except OSError as e:
        if e.errno in _BUSY:
            flock_free = False
        elif e.errno in _NO_FLOCK:
            flock_free = None  # no flock on this filesystem: the record alone decides
        else:
            raise UserError(f"cannot take the writer's lock {path}: {e.strerror or e}") from None
    if flock_free is not False and not _same_file(fd, path):
        return None
    try:
        holder = _read_record(fd)
    except (ValueError, KeyError, TypeError):
        holder = None
        if flock_free is False:
            raise UserError(f"{folder} is being written by another process right now (its "
                            f"lock {path} holds no readable record)") from None
        log.warning("the lock %s held an unreadable record: taken over", path)
    if flock_free is False:
        who = holder.describe() if holder else "another process (no record yet)"
        raise UserError(f"{folder} is being written by {who}: one writer per folder; wait "
                        "for it to end, or stop it")
    if holder is not None:
        stale = judge(holder, flock_free, stale_s=stale_s)
        if stale is None:
            raise UserError(f"{folder} is being written by {holder.describe()} (last heartbeat "
                            f"{max(0.0, time.time() - holder.heartbeat):.0f} s ago): one writer "
                            "per folder; wait for it to end, or stop it")
        log.warning("took over the lock %s left by %s: %s", path, holder.describe(), stale)
    now = time.time()
    me = Holder(host=socket.gethostname(), pid=os.getpid(), since=now, heartbeat=now,
                what=what, token=uuid.uuid4().hex, pid_started=_pid_started(os.getpid()))
    os.pwrite(fd, me.to_bytes(), 0)
    os.ftruncate(fd, RECORD_BYTES)
    os.fsync(fd)
    return FolderLock(path, fd, me, heartbeat_s)


@contextlib.contextmanager
def held(folder: str | Path, what: str, **kwargs) -> Iterator[FolderLock]:
    lock = acquire(folder, what, **kwargs)
    try:
        yield lock
    finally:
        lock.release()


def check_apart(first_name: str, first: str | Path, second_name: str, second: str | Path) -> None:
    """Two folders of one command that must not be the same, nor one inside the other (e.g.
    `train DATASET_DIR RUN_DIR`: the run's files would land among the dataset's)."""
    a, b = Path(first).resolve(), Path(second).resolve()
    if a == b:
        raise UserError(f"{first_name} and {second_name} are the same folder ({a}): give each "
                        "its own")
    if b in a.parents:
        raise UserError(f"{first_name} {first} is inside {second_name} {second}: give it a "
                        "folder of its own")
    if a in b.parents:
        raise UserError(f"{second_name} {second} is inside {first_name} {first}: give it a "
                        "folder of its own")
