"""What `imnet64 label-report` shows, read from a label OUT_DIR at a bounded cost.

Counts, confidence histograms, the low-confidence share and (where the parts carry true
labels) the teacher's accuracy and confusions come from the part CSVs alone, one streaming
pass (~60 bytes a row: ~80 MB for 1.28 M images). The sample images are then read from the
TFRecord parts by skipping from record header to record header (12 bytes each) and reading
only the chosen records' bytes: the report reads what it shows.

Only shards that `label-status` calls done are read, and each CSV must hold exactly the
rows its summary counts (else the shard is named as damaged): the report's counts are
label-status's.

The sample is deterministic: per teacher class, the `per_class` images whose sha256 of
(seed, input path) is smallest — a uniform sample that does not depend on the shard count,
the file order or the machine.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from imnet64.errors import UserError
from imnet64.formats.image_names import unescape_name
from imnet64.formats.label_parts import CSV_HEADER, part_paths
from imnet64.formats.label_status import LabelStatus, label_status
from imnet64.formats.manifest import load_manifest
from imnet64.formats.tfrecord_file import FOOTER, HEADER

import numpy as np

# the optional column with the true label (teacher index 1..1000, empty when unknown) that
# label parts of datasets with known labels carry (ImageNet64's official files)
TRUTH_COLUMN = "truth"
BINS = np.linspace(0.0, 1.0, 21)  # confidence histogram: 20 bins of 0.05


@dataclass(frozen=True)
class ReportOptions:
    classes: int = 12  # the most frequent teacher classes shown (of the kept ones, with a dataset)
    per_class: int = 8  # sample images per class
    low_confidence: float = 0.3  # a top-1 probability below this counts as low
    seed: int = 0  # of the sample
    top_confusions: int = 10


@dataclass
class ClassStats:
    teacher_id: int
    name: str
    count: int = 0
    low: int = 0  # confidence below ReportOptions.low_confidence
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(BINS) - 1, np.int64))
    truth_known: int = 0  # images with a true label
    truth_correct: int = 0  # ... that the teacher labeled right
    kept: bool = False  # one of the dataset's classes

    @property
    def accuracy(self) -> float | None:
        return self.truth_correct / self.truth_known if self.truth_known else None


@dataclass(frozen=True)
class Sample:
    part: int
    row: int  # record index in the part (the CSV row order is the TFRecord's)
    path: str
    confidence: float
    truth: int | None
    image: np.ndarray | None = None  # uint8 [64, 64, 3], filled by read_images


@dataclass(frozen=True)
class Confusion:
    teacher_id: int
    teacher_name: str
    truth_id: int
    truth_name: str
    count: int


@dataclass
class ReportData:
    out_dir: Path
    shards: int
    labeled: int
    rejected: int
    low_confidence: float
    low: int  # all images below the threshold
    hist: np.ndarray  # over all images
    distinct_classes: int
    shown: list[ClassStats]  # the rows of the picture, in order
    samples: dict[int, list[Sample]]  # teacher id -> its sample (by hash order)
    truth_known: int = 0
    truth_correct: int = 0
    confusions: list[Confusion] = field(default_factory=list)
    dataset: str | None = None
    kept_classes: int | None = None  # how many the dataset kept

    @property
    def accuracy(self) -> float | None:
        return self.truth_correct / self.truth_known if self.truth_known else None

    def to_json(self) -> dict:
        def cls(c: ClassStats) -> dict:
            return {"teacher_id": c.teacher_id, "name": c.name, "count": c.count,
                    "low_confidence": c.low, "kept": c.kept, "histogram": c.hist.tolist(),
                    "truth_known": c.truth_known, "truth_correct": c.truth_correct,
                    "samples": [{"part": s.part, "row": s.row, "path": s.path,
                                 "confidence": s.confidence, "truth": s.truth}
                                for s in self.samples.get(c.teacher_id, [])]}

        return {"out_dir": str(self.out_dir), "shards": self.shards, "labeled": self.labeled,
                "rejected": self.rejected, "low_confidence_threshold": self.low_confidence,
                "low_confidence": self.low, "histogram_bins": BINS.tolist(),
                "histogram": self.hist.tolist(), "distinct_classes": self.distinct_classes,
                "dataset": self.dataset, "kept_classes": self.kept_classes,
                "classes": [cls(c) for c in self.shown],
                "truth_known": self.truth_known, "truth_correct": self.truth_correct,
                "confusions": [vars(c) for c in self.confusions]}


def _sample_key(seed: int, path: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{path}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big")


def _rows(csv_path: Path):
    """(path, label, class_name, confidence, truth or None) per row of a part CSV."""
    with open(csv_path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header[:len(CSV_HEADER)] != CSV_HEADER:
            raise UserError(f"{csv_path} is not a label part CSV (header {header!r})")
        truth_at = header.index(TRUTH_COLUMN) if TRUTH_COLUMN in header else None
        for r in reader:
            truth = r[truth_at] if truth_at is not None and truth_at < len(r) else ""
            yield (r[0], int(r[1]), r[2], float(r[3]), int(truth) if truth else None)


def _done_parts(status: LabelStatus) -> list[tuple[int, dict]]:
    done = [(s.index, s.summary) for s in status.of("done") if s.summary]
    if not done:
        raise UserError(f"{status.out_dir} has no finished label shard yet (see imnet64 "
                        "label-status)")
    return done


def collect(out_dir: str | Path, options: ReportOptions = ReportOptions(),
            dataset: str | Path | None = None) -> ReportData:
    """Everything but the images: one pass over the done shards' CSVs."""
    out_dir = Path(out_dir)
    status = label_status(out_dir)
    stats: dict[int, ClassStats] = {}
    heaps: dict[int, list] = {}  # teacher id -> max-heap (negated keys) of its sample
    names: dict[int, str] = {}
    pairs: Counter = Counter()  # (teacher id, truth id) off the diagonal
    hist = np.zeros(len(BINS) - 1, np.int64)
    low = labeled = rejected = 0
    for index, summary in _done_parts(status):
        csv_path = part_paths(out_dir, index, status.num_shards).csv
        rows = 0
        for row, (path, label, name, conf, truth) in enumerate(_rows(csv_path)):
            rows += 1
            c = stats.get(label)
            if c is None:
                c = stats[label] = ClassStats(label, name)
                names[label] = name
            c.count += 1
            b = min(int(conf * (len(BINS) - 1)), len(BINS) - 2)
            c.hist[b] += 1
            if conf < options.low_confidence:
                c.low += 1
            if truth is not None:
                c.truth_known += 1
                if truth == label:
                    c.truth_correct += 1
                else:
                    pairs[(label, truth)] += 1
            heap = heaps.setdefault(label, [])
            item = (-_sample_key(options.seed, path), index, row, path, conf, truth)
            if len(heap) < options.per_class:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:
                heapq.heapreplace(heap, item)
        if rows != int(summary["labeled"]):
            raise UserError(f"{csv_path} has {rows} rows, its summary says {summary['labeled']} "
                            "labeled: the shard is damaged; re-run it with imnet64 label --force")
        labeled += rows
        rejected += int(summary["rejected"])
    for c in stats.values():
        hist += c.hist
        low += c.low
    kept_ids = _kept_teacher_ids(dataset)
    ranked = sorted(stats.values(), key=lambda c: (-c.count, c.teacher_id))
    kept = set(kept_ids) if kept_ids is not None else None
    for c in stats.values():
        c.kept = kept is not None and c.teacher_id in kept
    # the most frequent (kept) classes: a bounded picture even for 1000 kept classes
    shown = [c for c in ranked if kept is None or c.kept][:options.classes]
    samples = {c.teacher_id: [Sample(part, row, unescape_name(path), conf, truth)
                              for _, part, row, path, conf, truth in
                              sorted(heaps[c.teacher_id], reverse=True)]
               for c in shown}
    truth_names = _truth_names(names)
    confusions = [Confusion(t, names[t], u, truth_names(u), n)
                  for (t, u), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
                  [:options.top_confusions]]
    return ReportData(out_dir, status.num_shards, labeled, rejected, options.low_confidence,
                      low, hist, len(stats), shown, samples,
                      sum(c.truth_known for c in stats.values()),
                      sum(c.truth_correct for c in stats.values()), confusions,
                      str(dataset) if dataset else None,
                      len(kept_ids) if kept_ids is not None else None)


def _kept_teacher_ids(dataset: str | Path | None) -> list[int] | None:
    if dataset is None:
        return None
    manifest = load_manifest(dataset)
    ids = [c.teacher_id for c in manifest.classes if c.teacher_id is not None]
    if not ids:
        raise UserError(f"dataset {manifest.root} does not record teacher class ids (made from "
                        "class folders?): run label-report without --dataset")
    return [int(t) for t in ids]


def _truth_names(seen: dict[int, str]):
    """A true class id's name: the teacher's name for it where a row labeled it so, else the
    bundled ImageNet class names (index 0 'background', then the teacher's 1..1000)."""
    from imnet64.formats.class_names import imagenet_class_names

    table = None

    def name(truth: int) -> str:
        nonlocal table
        if truth in seen:
            return seen[truth]
        if table is None:
            table = imagenet_class_names()
        return table[truth] if 0 <= truth < len(table) else f"class {truth}"

    return name


def read_images(data: ReportData) -> ReportData:
    """The shown samples with their pixels: per part, the wanted records only (headers
    skipped over), decoded and fitted into 64x64."""
    from imnet64.formats.tfrecord_schema import ENCODED, FILENAME
    from imnet64.label.report_images import thumbnail

    import tensorflow as tf

    wanted: dict[int, dict[int, Sample]] = {}
    for sample_list in data.samples.values():
        for s in sample_list:
            wanted.setdefault(s.part, {})[s.row] = s
    filled: dict[tuple[int, int], Sample] = {}
    for part, rows in wanted.items():
        path = part_paths(data.out_dir, part, data.shards).tfrecord
        for row, record in _records_at(path, sorted(rows)):
            example = tf.train.Example.FromString(record)
            feature = example.features.feature
            name = feature[FILENAME].bytes_list.value[0].decode("utf-8", "surrogateescape")
            sample = rows[row]
            if name != sample.path:
                raise UserError(f"{path} record {row} is {name!r}, its CSV row says "
                                f"{sample.path!r}: the shard is damaged; re-run it")
            image = thumbnail(feature[ENCODED].bytes_list.value[0])
            filled[(part, row)] = Sample(sample.part, sample.row, sample.path,
                                         sample.confidence, sample.truth, image)
    data.samples = {t: [filled.get((s.part, s.row), s) for s in lst]
                    for t, lst in data.samples.items()}
    return data


def _records_at(path: Path, rows: list[int]):
    """(row, record bytes) for the sorted `rows` of a TFRecord file, seeking past the rest."""
    want = iter(rows)
    target = next(want, None)
    with open(path, "rb") as f:
        index = 0
        while target is not None:
            header = f.read(HEADER)
            if len(header) < HEADER:
                raise UserError(f"{path} ends before record {target}: the shard is damaged")
            (length,) = struct.unpack("<Q", header[:8])
            if index == target:
                yield index, f.read(length)
                f.seek(FOOTER, 1)
                target = next(want, None)
            else:
                f.seek(length + FOOTER, 1)
            index += 1
