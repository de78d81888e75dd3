"""A full disk or a read-only folder, as one line that names the folder and what is needed.

Writers anywhere (Python's open, TensorFlow's file ops, matplotlib) fail in their own words:
OSError 28 / 30 / 13, tf ResourceExhaustedError ("No space left on device"), tf
FailedPreconditionError / PermissionDeniedError ("Read-only file system"). `as_user_error`
turns each of them into a UserError (exit 2): the folder, the free space there and, where
the caller can estimate it, the space the stage needs; `writing_to` does so for a block.
Every output is written atomically (imnet64.atomic, TensorFlow's checkpoint writer), so what
is left is either complete or a temporary the next run removes; rerunning the same command
after space was freed resumes (the stages resume from what is complete).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from imnet64.errors import UserError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}
# how other libraries (TensorFlow's C++ file system, ...) say the same in their messages
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")
_READ_ONLY_TEXT = ("Read-only file system",)


def _kind(error: BaseException) -> str | None:
    """'no space', 'read-only', 'denied' or None (another error)."""
    if isinstance(error, OSError) and error.errno is not None:
        if error.errno in _NO_SPACE:
            return "no space"
        if error.errno in _READ_ONLY:
            return "read-only"
        if error.errno in _DENIED:
            return "denied"
        return None
    text = str(error)
    if any(t in text for t in _NO_SPACE_TEXT):
        return "no space"
    if any(t in text for t in _READ_ONLY_TEXT):
        return "read-only"
    return None


def is_no_space(error: BaseException) -> bool:
    """The error says the disk (or the quota) is full, in any library's words."""
    return _kind(error) == "no space"


def _existing(folder: Path) -> Path:
    """`folder` or its nearest existing parent (what disk_usage can be asked about)."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _no_inode(folder: Path) -> bool:
    """The filesystem has inodes to give and none is left (ENOSPC with bytes to spare)."""
    try:
        st = os.statvfs(_existing(folder))
    except OSError:
        return False
    return st.f_files > 0 and st.f_favail == 0


def free_bytes(folder: str | os.PathLike) -> int | None:
    try:
        return shutil.disk_usage(_existing(Path(folder))).free
    except OSError:
        return None


def size_text(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def as_user_error(error: BaseException, folder: str | os.PathLike, what: str,
                  needed: Callable[[], int | None] | None = None) -> UserError | None:
    """The one-line UserError for a write into `folder` that failed for lack of space or
    permission (None for any other error). `what`: the stage's output, for the message;
    `needed()`: its estimate of the free space the stage needs (bytes, None: unknown)."""
    if isinstance(error, UserError):
        return None
    kind = _kind(error)
    if kind is None:
        return None
    folder = Path(folder)
    where = getattr(error, "filename", None)
    shown = Path(where).parent if isinstance(where, str) and where else folder
    if kind == "no space":
        free = free_bytes(shown)
        need = needed() if needed else None
        need_text = (f"about {size_text(need)} free" if need
                     else "more free space than is left")
        inodes = " but no inode (no new file can be made there)" if _no_inode(shown) else ""
        return UserError(f"no space left in {shown} writing {what}: it needs {need_text}, "
                         f"{size_text(free)} is free{inodes}; free some space and rerun the "
                         "same command (it resumes; nothing half-written is kept as done)")
    if kind == "read-only":
        return UserError(f"{shown} is on a read-only file system: cannot write {what}; "
                         "give a writable folder")
    return UserError(f"no permission to write {what} in {shown}; give a writable folder")


@contextlib.contextmanager
def writing_to(folder: str | os.PathLike, what: str,
               needed: Callable[[], int | None] | None = None) -> Iterator[None]:
    """Turn a full disk or a read-only folder met inside the block into a UserError."""
    try:
        yield
    except Exception as e:
        user_error = as_user_error(e, folder, what, needed)
        if user_error is None:
            raise
        raise user_error from e


def tree_bytes(path: str | os.PathLike) -> int:
    """The bytes of a file, or of every file under a folder (0 if unreadable)."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if path.is_file():
            return path.stat().st_size
    return folder_bytes(path, "**/*")


def folder_bytes(folder: str | os.PathLike, pattern: str = "*") -> int:
    """The bytes of the files matching `pattern` in `folder` (0 if there is none)."""
    total = 0
    with contextlib.suppress(OSError):
        for p in Path(folder).glob(pattern):
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
    return total


def reports(what: str, folder: Callable[[dict], str | os.PathLike],
            needed: Callable[[dict], int | None] | None = None):
    """Decorator: run the function inside `writing_to(folder(args), what, needed(args))`,
    where `args` are its bound arguments by name (so a stage's entry point says where it
    writes and how much it needs in one line)."""
    import functools
    import inspect

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            named = dict(bound.arguments)
            estimate = (lambda: needed(named)) if needed else None
            with writing_to(folder(named), what, estimate):
                return fn(*args, **kwargs)
        return inner
    return wrap
