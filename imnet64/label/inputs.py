"""What `imnet64 label` reads: a folder, a text file listing paths, an uncompressed .tar, or
the official ImageNet64 batch files (label.batch_files: a file, a folder of them, their zip).

All three give an `InputSet`: a sorted list of names (the path relative to INPUT; for a tar,
the member name) and a way to read each one's bytes. A tar is read in place, by seeking to
each member's data, so 1.28 M small files never have to be unpacked on a parallel
filesystem.

`shard_range` splits the sorted names into contiguous, balanced ranges: a pure function of
(number of inputs, shard index, shard count), so every input lands in exactly one shard on
any machine. Contiguous ranges keep a shard's files together on disk and in the archive.

Reading never raises for one bad input: `read` raises `InputReadError` with a short reason,
which the labeler records as a reject.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tarfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imnet64.errors import UserError
from imnet64.formats.image_names import is_image_name, sha256_of_names
from imnet64.label import tar_headers

COMPRESSED_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
# A member or file larger than this is not a 64x64 image; refuse to pull it into memory.
MAX_FILE_BYTES = 64 * 1024 * 1024


class InputReadError(Exception):
    """One input could not be read; the message is the reject reason."""


def _hidden(name: str) -> bool:
    # dot files (.DS_Store, macOS "._x.png" resource forks, our own atomic temp files)
    return name.startswith(".")


@dataclass
class InputSet:
    """Sorted input names plus how to read them. Subclasses know the storage."""

    root: Path
    kind: str  # "folder", "list", "tar" or "imagenet64"
    names: list[str] = field(default_factory=list)

    def read(self, index: int, reserve: Callable[[int], None] | None = None) -> bytes:
        """The bytes of input `index`. `reserve(n)` is called with its size before it is
        read (it may block until memory is free: batch_reader.ByteBudget)."""
        raise NotImplementedError

    def local_path(self, index: int) -> Path | None:
        """The file on disk behind input `index` (None for tar members)."""
        return None

    def truth(self, index: int) -> int | None:
        """Input `index`'s true class as a teacher index (1..1000), when INPUT carries one
        (ImageNet64 batch files do); None otherwise."""
        return None

    def __len__(self) -> int:
        return len(self.names)

    def close(self) -> None:
        pass

    def subset(self, start: int, stop: int) -> InputSet:
        """The inputs [start, stop) as an InputSet of the same kind (for one shard)."""
        raise NotImplementedError


def _read_regular_file(path: str, reserve: Callable[[int], None] | None = None) -> bytes:
    """Bytes of `path`, refusing anything that is not a regular file of sane size.

    FIFOs/sockets/devices would block or stream forever, so they are checked with lstat/stat
    before opening, and opened non-blocking as a second guard.
    """
    try:
        st = os.stat(path)  # follows symlinks: a broken one fails here
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputReadError("broken symbolic link") from None
        raise InputReadError("file not found") from None
    except OSError as e:
        raise InputReadError(f"cannot stat: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputReadError("is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputReadError("not a regular file (FIFO, socket or device)")
    if st.st_size > MAX_FILE_BYTES:
        raise InputReadError(f"file too large ({st.st_size} bytes)")
    if reserve is not None:
        reserve(st.st_size)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise InputReadError(f"cannot open: {e.strerror or e}") from None
    try:
        chunks, remaining = [], MAX_FILE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as e:
        raise InputReadError(f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_FILE_BYTES:
        raise InputReadError("file too large")
    return data


class FileInputSet(InputSet):
    """Inputs that are files on disk: a folder's images or a list file's entries.

    Paths are kept as plain strings (a folder's are not stored at all but joined from the
    root on use): at 1.28 M inputs, Path objects alone would take ~0.6 GB.
    """

    def __init__(self, root: Path, kind: str, names: list[str], paths: list[str] | None):
        super().__init__(root=root, kind=kind, names=names)
        self.paths = paths  # None: root / name
        self._root = str(root)

    def _path(self, index: int) -> str:
        if self.paths is None:
            return os.path.join(self._root, self.names[index])
        return self.paths[index]

    def read(self, index: int, reserve: Callable[[int], None] | None = None) -> bytes:
        return _read_regular_file(self._path(index), reserve)

    def local_path(self, index: int) -> Path | None:
        return Path(self._path(index))

    def subset(self, start: int, stop: int) -> FileInputSet:
        paths = None if self.paths is None else self.paths[start:stop]
        return FileInputSet(self.root, self.kind, self.names[start:stop], paths)


def _walk_images(root: Path) -> Iterator[str]:
    """Relative names ('a/b.png') of image-named entries under `root`, recursively.

    Symlinked folders are followed once (a loop is not followed twice); symlinked files,
    FIFOs and other non-folders with image names are inputs (and rejected later if they are
    not readable images). Hidden names are skipped.
    """
    seen: set[tuple[int, int]] = set()
    stack = [("", str(root))]
    while stack:
        prefix, folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            # an unreadable sub-folder has no image names we could list
            continue
        for entry in entries:
            if _hidden(entry.name):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append((f"{prefix}{entry.name}/", entry.path))
            elif is_image_name(entry.name):
                yield f"{prefix}{entry.name}"


def _folder_input(root: Path) -> FileInputSet:
    names = list(_walk_images(root))
    names.sort()
    return FileInputSet(root, "folder", names, None)


def _list_input(list_file: Path) -> FileInputSet:
    """One path per line; blank lines and lines starting with '#' are ignored. Relative
    paths are relative to the list file's folder; the name kept for a path inside that
    folder is its relative path, otherwise the path as written."""
    base = list_file.parent.resolve()
    try:
        raw = list_file.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read list file {list_file}: {e.strerror or e}") from None
    if b"\0" in raw[:8192]:
        raise UserError(f"{list_file} is not a text file listing image paths")
    entries: dict[str, str] = {}
    base_str = str(base)
    for line in os.fsdecode(raw).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(base_str, line))
        name = os.path.relpath(path, base_str) if path.startswith(base_str + os.sep) else path
        entries.setdefault(name, path)  # a path listed twice is one input
    names = sorted(entries)
    return FileInputSet(list_file, "list", names, [entries[n] for n in names])


@dataclass(frozen=True)
class _Special:
    """A tar member that is not plain, labelable data: a link to another member, or one
    rejected (for its name, or because its data cannot be read in place)."""

    link: str | None = None  # target member name for hard/symbolic links
    problem: str | None = None  # the reject reason of this member itself
    # its data can still be read through a link to it (a regular member rejected for its
    # name only, e.g. `cat.png` -> `.cache/cat.png`)
    readable: bool = False


# Why a member is not a regular file, by tar type (tarfile's names for them)
_TAR_KINDS = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
              tarfile.FIFOTYPE: "FIFO"}


class TarInputSet(InputSet):
    """Members of an uncompressed tar, read by offset (no unpacking, no tarfile at read time).

    Per member only the name and two integers (data offset, size) are kept, in arrays, so
    listing a 1.28 M-member archive costs ~100 bytes per member. Reads use os.pread on one
    shared descriptor, so parallel readers need no lock.
    """

    def __init__(self, root: Path, names: list[str], offsets: array, sizes: array,
                 special: dict[int, _Special], everything: TarInputSet | None = None):
        super().__init__(root=root, kind="tar", names=names)
        # special: by index into `names` (a name archived twice appears twice)
        self.offsets, self.sizes, self.special = offsets, sizes, special
        # links may point at members outside this shard: resolve them in the whole archive
        self._everything = everything or self
        self._index: dict[str, int] | None = None
        self._fd = os.open(root, os.O_RDONLY)

    def _lookup(self, name: str) -> int | None:
        if self._index is None:  # built only when an archive has links
            # a name archived twice means its later copy (sorted stably: the last index)
            self._index = {n: i for i, n in enumerate(self.names)}
        return self._index.get(name)

    def _data_location(self, index: int) -> tuple[int, int]:
        special = self.special.get(index)
        if special is None:
            return self.offsets[index], self.sizes[index]
        if special.problem:
            raise InputReadError(special.problem)
        whole = self._everything
        for _ in range(16):  # bounded: link cycles are a reject, not a hang
            i = whole._lookup(special.link)
            if i is None:
                raise InputReadError("broken link inside the archive")
            special = whole.special.get(i)
            if special is None or special.readable:
                return whole.offsets[i], whole.sizes[i]
            if special.link is None:
                raise InputReadError(f"link to a member that cannot be read: {special.problem}")
        raise InputReadError("too many levels of links inside the archive")

    def read(self, index: int, reserve: Callable[[int], None] | None = None) -> bytes:
        offset, size = self._data_location(index)
        if size > MAX_FILE_BYTES:
            raise InputReadError(f"archive member too large ({size} bytes)")
        if reserve is not None:
            reserve(size)
        try:
            data = os.pread(self._fd, size, offset)
        except OSError as e:
            raise InputReadError(f"cannot read archive: {e.strerror or e}") from None
        if len(data) != size:
            raise InputReadError("archive member truncated (archive ends early)")
        return data

    def subset(self, start: int, stop: int) -> TarInputSet:
        special = {i - start: s for i, s in self.special.items() if start <= i < stop}
        everything = self._everything if self.special else None
        return TarInputSet(self.root, self.names[start:stop], self.offsets[start:stop],
                           self.sizes[start:stop], special, everything)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()


def _member_name(raw: str) -> tuple[str, str | None]:
    """(name, reject reason or None) of a tar member called `raw`.

    Names with a `..` component or a leading `/` could point outside wherever the archive is
    unpacked (GNU tar refuses `..` too): they are rejected and keep their name as archived,
    so the reject says which member it was. Other names are normalised (`./a.png` is
    `a.png`, as tar -x sees it).
    """
    if raw.startswith("/"):
        return raw, "unsafe path in archive (absolute)"
    if ".." in raw.split("/"):
        return raw, "unsafe path in archive (..)"
    name = posixpath.normpath(raw)
    if any(_hidden(part) for part in name.split("/")):
        return name, "hidden name (starts with a dot): not labeled, like in a folder"
    if not is_image_name(name):
        return name, "not an image file name: not labeled, like in a folder"
    return name, None


def _link_target(name: str, info: tarfile.TarInfo) -> str | None:
    """The member a link names (hard links: from the archive root; symbolic links: from the
    link's folder), or None when it points outside the archive."""
    if info.linkname.startswith("/"):
        return None
    base = posixpath.dirname(name) if info.issym() else ""
    target = posixpath.normpath(posixpath.join(base, info.linkname))
    if target == ".." or target.startswith("../"):
        return None
    return target


def _member_special(name: str, problem: str | None, info: tarfile.TarInfo) -> _Special | None:
    if info.islnk() or info.issym():
        target = _link_target(name, info)
        return _Special(link=target, problem=problem or (
            None if target is not None else "link points outside the archive"))
    if info.issparse():
        return _Special(problem=problem or "sparse archive member")
    if not info.isreg():
        kind = _TAR_KINDS.get(info.type, f"type {info.type!r}")
        return _Special(problem=problem or f"not a regular file in the archive ({kind})")
    return _Special(problem=problem, readable=True) if problem else None


@dataclass
class _TarIndex:
    """Members in archive order: name, data offset and size (0 for what is not plain data),
    and what is special about some of them, by archive position."""

    names: list[str] = field(default_factory=list)
    offsets: array = field(default_factory=lambda: array("q"))
    sizes: array = field(default_factory=lambda: array("q"))
    special: dict[int, _Special] = field(default_factory=dict)

    def add(self, info: tarfile.TarInfo) -> None:
        if info.isdir():
            return  # folders are not inputs; their files are
        name, problem = _member_name(info.name)
        extra = _member_special(name, problem, info)
        if extra is not None:
            self.special[len(self.names)] = extra
        plain = info.isreg() and not info.issparse()
        self.names.append(name)
        self.offsets.append(info.offset_data if plain else 0)
        self.sizes.append(info.size if plain else 0)

    def add_regular(self, raw_name: str, offset: int, size: int) -> None:
        """What add() does for a regular file, from tar_headers' scan (no TarInfo)."""
        name, problem = _member_name(raw_name)
        if problem:
            self.special[len(self.names)] = _Special(problem=problem, readable=True)
        self.names.append(name)
        self.offsets.append(offset)
        self.sizes.append(size)

    def sorted_by_name(self, path: Path) -> TarInputSet:
        """Sorted by name (a stable numpy argsort: 8 bytes per member, where a Python list of
        indices would take 36). A name archived twice stays twice: its earlier copies are
        rejected, the last one is labeled, as tar -x would leave it."""
        import numpy as np

        names = self.names
        order = np.argsort(np.array(names, dtype=object), kind="stable").tolist()
        special: dict[int, _Special] = {}
        for j, i in enumerate(order):
            s = self.special.get(i)
            archived_again = j + 1 < len(order) and names[order[j + 1]] == names[i]
            if archived_again and not (s and s.problem):
                s = _Special(link=s.link if s else None, readable=s is None or s.readable,
                             problem="archived again later under the same name (the later "
                                     "copy is the one labeled)")
            if s is not None:
                special[j] = s
        return TarInputSet(path, [names[i] for i in order],
                           array("q", (self.offsets[i] for i in order)),
                           array("q", (self.sizes[i] for i in order)), special)


def _tar_input(path: Path) -> TarInputSet:
    """Every member but directories is an input (see IMAGE_SUFFIXES): `inputs = labeled +
    rejected` then counts the archive's files, links and special files, one each. Indexed by
    tar_headers' lean scan (3x less CPU per member at 160 k), else by tarfile."""
    try:
        index = _TarIndex()
        for raw_name, is_dir, offset, size in tar_headers.plain_members(path):
            if not is_dir:
                index.add_regular(raw_name, offset, size)
        return index.sorted_by_name(path)
    except tar_headers.Unusual:
        pass  # links, long names, damage...: tarfile knows every case
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    index = _TarIndex()
    try:
        # "r:" = uncompressed only: random access by offset needs a plain archive
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                tar.members.clear()  # tarfile keeps every TarInfo in tar.members: not here
                index.add(info)
    except tarfile.ReadError as e:
        raise UserError(f"cannot read {path} as an uncompressed tar archive: {e}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    return index.sorted_by_name(path)


def open_inputs(path: str | os.PathLike) -> InputSet:
    """The inputs named by INPUT: a folder, a `.tar` archive, a text file of paths, or
    ImageNet64 batch files (one, a folder of them, or a downloaded zip)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"INPUT {path} does not exist")
    from imnet64.label import batch_files  # it builds on this module

    if batch_files.is_batch_input(path):
        return batch_files.open_batch_files(path)
    if path.is_dir():
        return _folder_input(path)
    lower = path.name.lower()
    if lower.endswith(COMPRESSED_TAR_SUFFIXES):
        raise UserError(
            f"{path} is a compressed archive, which cannot be read in place; "
            "use an uncompressed .tar (tar -cf) or unpack it"
        )
    if lower.endswith(".tar"):
        return _tar_input(path)
    if not path.is_file():
        raise UserError(f"INPUT {path} is neither a folder, a .tar archive nor a list file")
    return _list_input(path)


def shard_range(total: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard `index` of `count` over `total` sorted inputs.

    Balanced contiguous ranges: sizes differ by at most one, and the ranges tile 0..total.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in 0..{count - 1}")
    return index * total // count, (index + 1) * total // count


def names_fingerprint(names: Sequence[str]) -> str:
    """sha256 over the sorted input names: tells whether a summary belongs to these inputs."""
    return sha256_of_names(names, end=b"\0")
