"""`--export-folders DIR`: the seed notebook's class-folder layout, without touching the inputs.

The seed `os.rename`d every image into `<its folder>/<class name>/`. Here DIR gets
`DIR/<NNNN_class_name>/<file>` entries that are symbolic links to the inputs (absolute
targets), or copies with `copy=True`. Tar members cannot be linked to, so they are always
copied out. Every entry appears atomically (made under a temporary name, then renamed), and
re-running the export gives the same tree.

The file name is the input's path relative to INPUT with '/' replaced by '__', so images
with the same base name in different sub-folders do not collide. So that two inputs never
share an entry (`bad/gray8.png` and `bad__gray8.png` both flatten to `bad__gray8.png`), a
name that flattening could make ambiguous (it holds '__' or '~', or a '_' beside a '/',
or at either end) also gets '~' and 12 hex digits of its sha256 before the extension:
other names cannot contain '~', and among the rest every '__' stands for one '/'.
Every other name keeps the entry it always had.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from imnet64 import atomic
from imnet64.formats.class_names import safe_folder_name
from imnet64.label.inputs import InputReadError, InputSet

SEPARATOR = "__"
MARK = "~"  # before the digest of a name whose flattening could be ambiguous


def _ambiguous(name: str) -> bool:
    if SEPARATOR in name or MARK in name:
        return True
    return any(part.startswith("_") or part.endswith("_") for part in name.split("/"))


def export_name(name: str) -> str:
    """The flat file name for input `name` (a path relative to INPUT): distinct names give
    distinct entries (see the module docstring)."""
    flat = name.replace("/", SEPARATOR)
    if not _ambiguous(name):
        return flat
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    stem, dot, ext = flat.rpartition(".")
    if not dot or not stem:  # no extension (or a dot file): the mark goes at the end
        return f"{flat}{MARK}{digest}"
    return f"{stem}{MARK}{digest}.{ext}"


def _link_atomically(target: Path, link: Path) -> None:
    if link.is_symlink() and os.readlink(link) == str(target):
        return  # already there (a re-run)
    tmp = atomic.temp_path_for(link)
    tmp.unlink()
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def export_folders(
    inputs: InputSet,
    rows: Iterable[tuple[str, int, str, float]],
    dest: str | os.PathLike,
    copy: bool = False,
) -> int:
    """Make DIR/<class>/<file> for every labeled row (path, label, class_name, confidence).

    Returns the number of entries made or confirmed. Inputs are only read, never changed.
    """
    dest = Path(dest)
    index = {name: i for i, name in enumerate(inputs.names)}
    made = 0
    for name, label, class_name, _ in rows:
        i = index.get(name)
        if i is None:
            raise ValueError(f"{name!r} is in the part CSV but not among this shard's inputs")
        folder = dest / safe_folder_name(class_name, label)
        folder.mkdir(parents=True, exist_ok=True)
        entry = folder / export_name(name)
        source = inputs.local_path(i)
        if source is not None and not copy:
            _link_atomically(Path(os.path.abspath(source)), entry)
        else:
            try:
                data = inputs.read(i)
            except InputReadError as e:  # labeled a moment ago, gone now
                raise ValueError(f"cannot copy {name!r} for --export-folders: {e}") from None
            if entry.is_file() and not entry.is_symlink() and entry.read_bytes() == data:
                made += 1
                continue
            atomic.write_bytes(entry, data)
        made += 1
    return made
