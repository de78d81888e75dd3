"""What `shard-records` reads: the OUT_DIR of `imnet64 label`, or a class-folder tree.

Either way the result is a `Source`: one small `SourceItem` per labeled image (name, class,
teacher confidence, where its bytes are) and the class catalog. Image bytes are not held:
label parts are read again by record offset when a shard is written, folder files by path.

- Label OUT_DIR: `OUT_DIR/labels/part-IIIII-of-NNNNN.{tfrecord,csv,json}`; a part counts
  when `label-status` calls it done (valid summary, part files of the recorded sizes).
  Parts not done are an error unless `allow_partial`. (SOURCE may also be the `labels/`
  folder itself.) Class key = teacher id.
- Class folders: `SOURCE/<class>/**/<image>`; class key = folder name. A folder named like
  an ImageNet class ("tabby", or "0282_tiger_cat" as `class_names.safe_folder_name` makes
  it) keeps its teacher id; otherwise the teacher id is unknown (-1 in records).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Union

from imnet64.atomic import sha256_file
from imnet64.errors import UserError
from imnet64.formats import image64, provenance
from imnet64.formats.class_names import imagenet_class_names, safe_folder_name
from imnet64.formats.image_names import is_image_name, sha256_of_names
from imnet64.formats.label_parts import LABELS_DIR, PART_RE, part_stem, read_summary
from imnet64.formats.label_status import label_status
from imnet64.formats.tfrecord_file import RecordFileError, iter_records, read_record_at

from google.protobuf.message import DecodeError

# A 64x64 image never needs more than this in a shard (raw pixels + PNG overhead); used to
# estimate shard sizes of sources holding bigger files that will be resized.
MAX_IMAGE_ESTIMATE = image64.RAW_BYTES + 1024

ClassKey = Union[int, str]  # teacher id (label source) or folder name (class folders)


class SourceItem(NamedTuple):
    """One labeled image. `part`/`offset` locate it in a label part; -1 for folder files."""

    filename: str  # relative to the labeling INPUT, or to the class-folder root
    class_key: ClassKey
    confidence: float
    part: int
    offset: int
    size: int  # bytes of the original image
    truth: int = -1  # true class as a teacher index (label parts of ImageNet64 files); -1


@dataclass
class Source:
    kind: str  # "labels" or "class-folders"
    root: Path  # the labels/ folder, or the class-folder root
    items: list[SourceItem]
    class_names: dict[ClassKey, str]
    teacher_ids: dict[ClassKey, int]  # -1 = unknown
    teacher: str | None
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    part_files: list[str] = field(default_factory=list)  # index -> part file name
    teacher_sha256: str | None = None  # of the teacher's weights (the parts' provenance)


# ---------------------------------------------------------------- label OUT_DIR


def labels_dir(source: Path) -> Path | None:
    """The labels/ folder holding label parts, if SOURCE is a label OUT_DIR (or its labels/)."""
    for folder in (source / LABELS_DIR, source):
        if (
            folder.name == LABELS_DIR
            and folder.is_dir()
            and any(PART_RE.match(name) for name in os.listdir(folder))
        ):
            return folder
    return None


@dataclass(frozen=True)
class LabelParts:
    folder: Path
    count: int  # NNNNN
    done: tuple[int, ...]  # shards `label-status` calls done (summary valid, files complete)
    not_done: tuple[tuple[int, str, str], ...]  # (index, state, detail)

    def name(self, index: int, ext: str) -> str:
        return f"{part_stem(index, self.count)}.{ext}"


def find_parts(folder: Path) -> LabelParts:
    """The state of every label part, judged exactly as `imnet64 label-status` judges it."""
    counts = {int(m.group(2)) for name in os.listdir(folder) if (m := PART_RE.match(name))}
    if len(counts) != 1:
        raise UserError(
            f"{folder} holds label parts of different shard counts ({sorted(counts)}); "
            "keep the parts of one labeling run only"
        )
    status = label_status(folder.parent, counts.pop())
    return LabelParts(
        folder,
        status.num_shards,
        tuple(s.index for s in status.of("done")),
        tuple((s.index, s.state, s.detail) for s in status.shards if s.state != "done"),
    )


def _teacher_text(teacher: Any) -> str | None:
    if teacher is None or isinstance(teacher, str):
        return teacher
    if isinstance(teacher, dict):
        for key in ("handle", "name", "source", "path"):
            if isinstance(teacher.get(key), str):
                return teacher[key]
    return json.dumps(teacher, sort_keys=True)


def _parts_fingerprint(parts: LabelParts) -> str:
    def lines() -> Iterator[str]:
        for i in parts.done:
            record = parts.folder / parts.name(i, "tfrecord")
            summary = parts.folder / parts.name(i, "json")
            yield f"{record.name}\t{record.stat().st_size}"
            yield sha256_file(summary)

    return sha256_of_names(lines(), end=b"\n")


def _check_parts(parts: LabelParts, allow_partial: bool) -> None:
    damaged = [detail for _, state, detail in parts.not_done if state == "damaged"]
    if damaged:  # never skipped, even with --allow-partial: someone must look at it
        raise UserError(damaged[0])
    if parts.not_done and not allow_partial:
        shown = ", ".join(f"{i} {state}" for i, state, _ in parts.not_done[:8])
        more = " ..." if len(parts.not_done) > 8 else ""
        raise UserError(
            f"label output {parts.folder.parent} is incomplete: {len(parts.not_done)} of "
            f"{parts.count} parts not done ({shown}{more}); finish labeling (see "
            "`imnet64 label-status`) or pass --allow-partial"
        )
    if not parts.done:
        raise UserError(f"label output {parts.folder.parent} has no finished part")


def source_fingerprint(source: Path, allow_partial: bool) -> str:
    """Cheap identity of SOURCE (no image read): what the manifest's up-to-date check uses."""
    folder = labels_dir(source)
    if folder is not None:
        parts = find_parts(folder)
        _check_parts(parts, allow_partial)
        return _parts_fingerprint(parts)
    return _folder_fingerprint(_list_class_folders(source))


_TOTALS = ("inputs", "labeled", "rejected")


@dataclass
class _PartSummaries:
    """What the summaries of the label parts read so far say together."""

    teachers: set[str] = field(default_factory=set)
    teacher_weights: set[str] = field(default_factory=set)
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TOTALS, 0))

    def add(self, summary: dict[str, Any]) -> None:
        teacher = _teacher_text(summary.get("teacher"))
        if teacher is not None:
            self.teachers.add(teacher)
        weights = provenance.teacher_fields(summary)["teacher_sha256"]
        if weights:  # parts written before provenance records have none
            self.teacher_weights.add(weights)
        for key in self.totals:
            if isinstance(summary.get(key), int):
                self.totals[key] += summary[key]

    def check_one_teacher(self, folder: Path) -> None:
        if len(self.teachers) > 1:
            raise UserError(
                f"label parts in {folder} come from different teachers: {sorted(self.teachers)}"
            )
        if len(self.teacher_weights) > 1:  # e.g. a TF Hub module updated between label tasks
            shown = ", ".join(w[:12] for w in sorted(self.teacher_weights))
            raise UserError(f"label parts in {folder} come from teachers with different weights "
                            f"(sha256 {shown}): relabel the parts of one of them with --force")


def _read_summary(path: Path) -> dict[str, Any]:
    """A done part's summary, checked (imnet64.formats.label_parts.read_summary)."""
    summary = read_summary(path)
    if summary is None:
        raise UserError(f"label summary {path} is missing")
    return summary


def _part_items(record_path: Path, part: int, class_names: dict[ClassKey, str]
                ) -> list[SourceItem]:
    """The items of label part `part`; adds the classes met to `class_names`."""
    from imnet64.formats.tfrecord_schema import (
        catalog_fields,  # TensorFlow only when really scanning
    )

    items = []
    try:
        for offset, data in iter_records(record_path):
            filename, label, class_name, confidence, size, truth = catalog_fields(data)
            class_names.setdefault(label, class_name)
            items.append(SourceItem(filename, label, confidence, part, offset, size, truth))
    except RecordFileError as e:
        raise UserError(f"label part is damaged: {e}") from None
    except (DecodeError, KeyError, IndexError) as e:  # not a labeled-image tf.train.Example
        raise UserError(f"label part is damaged: {record_path}: record {len(items)} does not "
                        f"parse ({type(e).__name__}: {e})") from None
    return items


def _check_part_sha256(record_path: Path, summary: dict[str, Any]) -> None:
    """label-status checks only a part's size; a flipped bit must not reach the shards."""
    recorded = summary.get("files", {}).get("tfrecord", {}).get("sha256")
    if recorded and sha256_file(record_path) != recorded:
        raise UserError(f"label part is damaged: {record_path} does not match the sha256 its "
                        "summary recorded; re-run that label shard with --force")


def _check_labeled_count(record_path: Path, summary: dict[str, Any], found: int) -> None:
    if isinstance(summary.get("labeled"), int) and summary["labeled"] != found:
        raise UserError(
            f"{record_path} holds {found} records but its summary says {summary['labeled']} "
            "labeled; re-run that label shard"
        )


def scan_labels(folder: Path, allow_partial: bool) -> Source:
    parts = find_parts(folder)
    _check_parts(parts, allow_partial)
    items: list[SourceItem] = []
    class_names: dict[ClassKey, str] = {}
    summaries = _PartSummaries()
    part_files = [""] * parts.count
    for i in parts.done:
        record_path = folder / parts.name(i, "tfrecord")
        summary = _read_summary(folder / parts.name(i, "json"))
        summaries.add(summary)
        part_files[i] = record_path.name
        _check_part_sha256(record_path, summary)
        part_items = _part_items(record_path, i, class_names)
        _check_labeled_count(record_path, summary, len(part_items))
        items.extend(part_items)
    summaries.check_one_teacher(folder)
    return Source(
        kind="labels",
        root=folder,
        items=items,
        class_names=class_names,
        teacher_ids={k: int(k) for k in class_names},
        teacher=next(iter(summaries.teachers), None),
        fingerprint=_parts_fingerprint(parts),
        info={
            "parts": parts.count,
            "parts_used": len(parts.done),
            "parts_not_done": [i for i, _, _ in parts.not_done],
            **summaries.totals,
        },
        part_files=part_files,
        teacher_sha256=next(iter(summaries.teacher_weights), None),
    )


# ---------------------------------------------------------------- class folders


def _list_class_folders(root: Path) -> list[tuple[str, list[tuple[str, int]]]]:
    """[(folder name, [(relative file name, size), ...])] sorted; hidden names skipped."""
    if not root.is_dir():
        raise UserError(f"SOURCE {root} is not a folder")
    return [
        (entry.name, _image_files(root, entry.path))
        for entry in sorted(os.scandir(root), key=lambda e: e.name)
        if not entry.name.startswith(".") and entry.is_dir()
    ]


def _image_files(root: Path, class_folder: str) -> list[tuple[str, int]]:
    """[(file name relative to root, size)] of the images anywhere under class_folder,
    folder by folder and sorted in each; hidden names skipped, links followed."""
    files = []
    for folder, dirs, names in os.walk(class_folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_folder = Path(folder).relative_to(root).as_posix()
        files.extend(
            (f"{rel_folder}/{name}", _file_size(os.path.join(folder, name)))
            for name in sorted(names)
            if not name.startswith(".") and is_image_name(name)
        )
    return files


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


def _folder_fingerprint(classes: list[tuple[str, list[tuple[str, int]]]]) -> str:
    return sha256_of_names((f"{name}\t{size}" for _, files in classes for name, size in files),
                           end=b"\n")


def _teacher_id_for_folder(folder: str) -> int:
    """The ImageNet (teacher) id a folder name stands for, or -1."""
    names = imagenet_class_names()
    m = re.match(r"^(\d{4})_", folder)
    if m and int(m.group(1)) < len(names):
        i = int(m.group(1))
        if safe_folder_name(names[i], i) == folder:
            return i
    matches = [i for i, n in enumerate(names) if n == folder]
    return matches[0] if len(matches) == 1 else -1


def scan_class_folders(root: Path) -> Source:
    classes = _list_class_folders(root)
    items: list[SourceItem] = []
    class_names: dict[ClassKey, str] = {}
    teacher_ids: dict[ClassKey, int] = {}
    names = imagenet_class_names()
    for folder, files in classes:
        if not files:
            continue
        tid = _teacher_id_for_folder(folder)
        teacher_ids[folder] = tid
        # "0282_tiger_cat" reads better as the class name "tiger cat"
        class_names[folder] = names[tid] if tid >= 0 and folder != names[tid] else folder
        items.extend(SourceItem(name, folder, 1.0, -1, -1, size) for name, size in files)
    if not items:
        raise UserError(
            f"SOURCE {root} is neither a label OUT_DIR (no labels/part-*.tfrecord) nor a "
            "class-folder tree (no images in sub-folders)"
        )
    return Source(
        kind="class-folders",
        root=root,
        items=items,
        class_names=class_names,
        teacher_ids=teacher_ids,
        teacher=None,
        fingerprint=_folder_fingerprint(classes),
        info={"class_folders": len(class_names), "inputs": len(items), "labeled": len(items)},
    )


def scan_source(source: str | os.PathLike, allow_partial: bool = False) -> Source:
    """Read SOURCE's catalog: every labeled image once, with its class and location."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"SOURCE {source} does not exist")
    folder = labels_dir(source)
    scanned = scan_labels(folder, allow_partial) if folder else scan_class_folders(source)
    seen: set[str] = set()
    for item in scanned.items:
        if item.filename in seen:
            raise UserError(f"{item.filename} appears twice in SOURCE {source}")
        seen.add(item.filename)
    return scanned


def keyed_by_truth(source: Source) -> Source:
    """The same images with their true class as the class (`shard-records --labels truth`);
    every image must carry one (label parts of ImageNet64 batch files do)."""
    if source.kind != "labels":
        raise UserError("--labels truth needs label parts of inputs with true labels "
                        "(ImageNet64 batch files); class folders are their own truth")
    missing = sum(it.truth < 0 for it in source.items)
    if missing:
        example = next(it.filename for it in source.items if it.truth < 0)
        raise UserError(f"--labels truth: {missing} of {len(source.items)} labeled images "
                        f"carry no true label (e.g. {example}); label ImageNet64 batch files, "
                        "or use --labels teacher")
    names = imagenet_class_names()
    items = [it._replace(class_key=it.truth, confidence=1.0) for it in source.items]
    keys = sorted({it.truth for it in items})
    return Source(
        kind=source.kind, root=source.root, items=items,
        class_names={k: names[k] for k in keys}, teacher_ids={k: k for k in keys},
        teacher=source.teacher, fingerprint=source.fingerprint, info=source.info,
        part_files=source.part_files, teacher_sha256=source.teacher_sha256)


# ---------------------------------------------------------------- reading bytes back


@dataclass(frozen=True)
class SourceRef:
    """What a shard writer needs to read items back (picklable, for worker processes)."""

    kind: str
    root: str
    part_files: tuple[str, ...] = ()

    @classmethod
    def of(cls, source: Source) -> SourceRef:
        return cls(source.kind, str(source.root), tuple(source.part_files))


class ItemReader:
    """Reads items of one source; keeps label part files open between reads."""

    def __init__(self, ref: SourceRef):
        self.ref = ref
        self._open: dict[int, Any] = {}

    def read(self, item: SourceItem):
        """The label record (records.LabeledImage) for a label source, else the file bytes."""
        if self.ref.kind == "labels":
            from imnet64.formats.tfrecord_schema import parse_labeled

            f = self._open.get(item.part)
            if f is None:
                path = Path(self.ref.root) / self.ref.part_files[item.part]
                f = self._open[item.part] = open(path, "rb")  # noqa: SIM115 (closed in close())
            return parse_labeled(read_record_at(f, item.offset, f.name))
        path = Path(self.ref.root) / item.filename
        try:
            return path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror or e}") from None

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()
