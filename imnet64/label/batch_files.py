"""`imnet64 label` INPUT as the official ImageNet64 batch files: one file, a folder of them,
or a zip as downloaded (read in place), pickle or .npz (formats.imagenet64_batch).

Each image is named `<file stem>/<row, 6 digits from 0>` (`train_data_batch_3/000123`), so
the names sort by file, then row, and sharding, resume and byte-identical part files work
as for PNG inputs. The names are not stored (1.28 M strings would take ~100 MB per rank):
`RowNames` makes them on demand.

What `read` gives the labeler: the row as a PNG (PIL, compress level 6: deterministic for
a given zlib), so the decode, the label part (`image/encoded`) and every later stage are the
same as for PNG inputs. The cost, measured on 64x64 photo crops (AMD EPYC Zen 4, load
average ~11 from other jobs; best of 5 x 300 images): encode 1.3 ms + decode 0.6 ms an
image (compress level 1 saves only 0.2 ms), done on the reading threads while the teacher
(~10 ms an image on a quiet CPU, FACTS.md) works on the previous batch. The true label
travels beside it (`truth`), as the teacher's index (formats.imagenet64_classes).
"""

from __future__ import annotations

import io
import os
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from imnet64.errors import UserError
from imnet64.formats.byte_sources import FileSource, SourceError, ZipMembers
from imnet64.formats.imagenet64_batch import (
    BatchFile,
    BatchFormatError,
    batch_stem,
    planes_to_hwc,
    read_batch_file,
)
from imnet64.formats.imagenet64_classes import devkit_to_teacher
from imnet64.label.inputs import InputReadError, InputSet

import numpy as np
from PIL import Image

KIND = "imagenet64"
ROW_DIGITS = 6  # a batch file has ~128 k rows


def row_name(stem: str, row: int) -> str:
    return f"{stem}/{row:0{ROW_DIGITS}d}"


class RowNames(Sequence[str]):
    """The sorted names of rows [start, stop) over the files (made on demand)."""

    def __init__(self, stems: list[str], firsts: list[int], start: int, stop: int) -> None:
        self._stems, self._firsts, self._start, self._stop = stems, firsts, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    def locate(self, index: int) -> tuple[int, int]:
        """(file number, row in that file) of name `index`."""
        g = self._start + index
        f = bisect_right(self._firsts, g) - 1
        return f, g - self._firsts[f]

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return RowNames(self._stems, self._firsts, self._start + start,
                            self._start + max(start, stop))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        f, row = self.locate(index)
        return row_name(self._stems[f], row)

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class _Sources:
    """The open files behind a set and its subsets: closed when the last of them is."""

    def __init__(self, closers: list[Callable[[], None]]) -> None:
        self.closers, self.users = closers, 0

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            for close in self.closers:
                close()
            self.closers.clear()


class BatchFilesInputSet(InputSet):
    """Rows of ImageNet64 batch files, in (file stem, row) order."""

    def __init__(self, root: Path, files: list[BatchFile], sources: _Sources,
                 start: int = 0, stop: int | None = None) -> None:
        self._files = files
        self._sources = sources
        sources.users += 1
        self._open = True
        firsts = [0]
        for f in files:
            firsts.append(firsts[-1] + f.rows)
        self._firsts = firsts
        stop = firsts[-1] if stop is None else stop
        names = RowNames([f.stem for f in files], firsts[:-1], start, stop)
        super().__init__(root=root, kind=KIND, names=names)  # type: ignore[arg-type]
        self._start, self._stop = start, stop
        self._to_teacher = devkit_to_teacher()

    def _locate(self, index: int) -> tuple[BatchFile, int]:
        f, row = self.names.locate(index)  # type: ignore[attr-defined]
        return self._files[f], row

    def image(self, index: int) -> np.ndarray:
        """Input `index` as uint8 [64, 64, 3]."""
        batch, row = self._locate(index)
        try:
            return planes_to_hwc(batch.row(row))
        except (SourceError, OSError) as e:
            raise InputReadError(f"cannot read row {row} of {batch.stem}: {e}") from None

    def read(self, index: int, reserve: Callable[[int], None] | None = None) -> bytes:
        return encode_png(self.image(index))

    def truth(self, index: int) -> int | None:
        batch, row = self._locate(index)
        return int(self._to_teacher[batch.labels[row]])

    def subset(self, start: int, stop: int) -> BatchFilesInputSet:
        return BatchFilesInputSet(self.root, self._files, self._sources,
                                  self._start + start, self._start + stop)

    def close(self) -> None:
        # the files are shared with subsets (a shard's): closed when the last one is
        if self._open:
            self._open = False
            self._sources.release()


def _download_zip(name: str) -> bool:
    """A zip as image-net.org names them (Imagenet64_train_part1.zip, Imagenet64_val.zip)."""
    lower = name.lower()
    return lower.startswith("imagenet64") and lower.endswith(".zip")


def _batch_entries(folder: Path) -> list[Path]:
    names = sorted(e for e in os.listdir(folder) if batch_stem(e) or _download_zip(e))
    return [folder / e for e in names if (folder / e).is_file()]


def is_batch_input(path: Path) -> bool:
    """Does INPUT name ImageNet64 batch files (a batch file, a .zip, or a folder holding
    batch files or the downloaded zips)?"""
    if path.is_dir():
        try:
            return bool(_batch_entries(path))
        except OSError:
            return False
    return bool(batch_stem(path.name)) or path.name.lower().endswith(".zip")


def _read(stem: str, source, where: str) -> BatchFile:
    try:
        return read_batch_file(stem, source)
    except BatchFormatError as e:
        raise UserError(f"{where}: {e}") from None


def _add(found: dict[str, tuple[str, BatchFile]], stem: str, where: str, batch: BatchFile):
    if stem in found:
        raise UserError(f"{found[stem][0]} and {where} both hold {stem}: keep one")
    found[stem] = (where, batch)


def _from_zip(path: Path, found: dict, closers: list) -> None:
    source = FileSource(path)
    closers.append(source.close)
    try:
        members = ZipMembers(source)
        infos = [i for i in members.infos if batch_stem(Path(i.filename).name)]
        if not infos:
            raise UserError(f"{path}: a zip with no ImageNet64 batch files "
                            "(train_data_batch_N, val_data, .npz or pickle) in it")
        for info in infos:
            where = f"{path}:{info.filename}"
            member = members.open(info)
            _add(found, batch_stem(Path(info.filename).name), where, _read(
                batch_stem(Path(info.filename).name), member, where))
    except SourceError as e:
        raise UserError(f"{path}: {e}") from None


def open_batch_files(path: str | os.PathLike) -> BatchFilesInputSet:
    """The rows of the batch files INPUT names. Every file is checked before anything is
    labeled; a bad one is a UserError naming it."""
    path = Path(path)
    found: dict[str, tuple[str, BatchFile]] = {}
    closers: list[Callable[[], None]] = []
    try:
        files = _batch_entries(path) if path.is_dir() else [path]
        for file in files:
            if file.name.lower().endswith(".zip"):
                _from_zip(file, found, closers)
                continue
            try:
                source = FileSource(file)
            except OSError as e:
                raise UserError(f"cannot read {file}: {e.strerror or e}") from None
            closers.append(source.close)
            _add(found, batch_stem(file.name), str(file), _read(batch_stem(file.name), source,
                                                               str(file)))
    except BaseException:
        for close in closers:
            close()
        raise
    batches = [found[stem][1] for stem in sorted(found)]
    return BatchFilesInputSet(path, batches, _Sources(closers))
