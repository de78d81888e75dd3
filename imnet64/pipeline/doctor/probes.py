"""Checks `imnet64 doctor` makes by trying, where looking is not enough (issue 24): that the
output folder takes a file, and that the teacher loads and returns 1001 logits.

- Output: a read-only mount, or a folder this user may not write, made `doctor` say "ok"
  (free space was all it looked at); as root, permission bits say nothing. So the nearest
  existing folder is asked for ST_RDONLY, then a temporary file is created and removed there.
- Teacher: a SavedModel with another output size, or with bit-flipped variables (TensorFlow
  checks each tensor's CRC32C when it restores them), is only found by loading it, as
  `label` will (imnet64.teacher.loading).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from imnet64.errors import UserError


def output_problems(folder: str | os.PathLike) -> list[str]:
    """One line if a run could not write into `folder` (or create it)."""
    folder = Path(folder).expanduser().absolute()
    at = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if at is None or not at.is_dir():
        return [f"{folder}: cannot write here: {at} is not a folder"]
    try:
        if os.statvfs(at).f_flag & os.ST_RDONLY:
            return [f"{folder}: cannot write here: {at} is on a read-only file system"]
        fd, probe = tempfile.mkstemp(prefix=".imnet64-doctor-", dir=at)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return [f"{folder}: cannot write here: {at}: {e.strerror or e} "
                "(read-only, or not this user's)"]
    return []


def teacher_problems(spec: str) -> list[str]:
    """One line if the teacher does not load or does not return 1001 logits."""
    from imnet64.teacher.loading import load_teacher

    try:
        load_teacher(spec, optimize=False)
    except UserError as e:
        return [str(e)]
    return []
