"""Test data for shard-records / data tests: label OUT_DIRs and class-folder trees made of
real 64x64 photos (imnet64.pipeline.sample_images) with labels the test chooses.

A label OUT_DIR is written exactly in `imnet64 label`'s format (part .tfrecord of
LabeledImage records, .csv, and the .json summary last), so `label-status` calls it done.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import imnet64
from imnet64 import atomic
from imnet64.formats.class_names import imagenet_class_names
from imnet64.formats.label_parts import CSV_HEADER, part_paths
from imnet64.formats.label_summary import LabelSummary, PartFile
from imnet64.formats.tfrecord_file import iter_records
from imnet64.formats.tfrecord_schema import LabeledImage, parse_labeled, serialize_labeled
from imnet64.label.inputs import names_fingerprint
from imnet64.pipeline.sample_images import write_sample

TEACHER = "test-teacher"


def _facts(path: Path) -> PartFile:
    return PartFile(path.name, path.stat().st_size, atomic.sha256_file(path))


def write_label_out_dir(
    out_dir: Path,
    root: Path,
    files: Sequence[Path],
    labels: Sequence[tuple[int, float]],
    parts: int = 2,
    top_k: int = 3,
    truths: Sequence[int | None] | None = None,
) -> list[LabeledImage]:
    """Label `files` (under `root`) with the given (teacher id, confidence) pairs, in `parts`
    contiguous shards. Top-k = the label, then the next teacher ids, probabilities summing
    to <= 1. Returns the LabeledImage of every file."""
    names = imagenet_class_names()
    items = []
    truths = truths if truths is not None else [None] * len(files)
    for path, (tid, conf), truth in zip(files, labels, truths):
        others = [(tid + k) % 1001 for k in range(1, top_k)]
        rest = (1.0 - conf) / max(1, top_k - 1)
        items.append(
            LabeledImage(
                encoded=path.read_bytes(),
                image_format="png",
                height=64,
                width=64,
                filename=path.relative_to(root).as_posix(),
                label=tid,
                class_name=names[tid],
                confidence=conf,
                topk_ids=(tid, *others),
                topk_probs=(conf, *([rest] * len(others))),
                truth=truth,
            )
        )
    items.sort(key=lambda it: it.filename)
    for index in range(parts):
        chunk = items[index * len(items) // parts : (index + 1) * len(items) // parts]
        paths = part_paths(out_dir, index, parts)
        paths.folder.mkdir(parents=True, exist_ok=True)
        import tensorflow as tf

        with tf.io.TFRecordWriter(str(paths.tfrecord)) as w:
            for it in chunk:
                w.write(serialize_labeled(it))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for it in chunk:
            writer.writerow([it.filename, it.label, it.class_name, f"{it.confidence:.6f}",
                             "" if it.truth is None else it.truth])
        paths.csv.write_text(buf.getvalue(), "utf-8")
        names = [it.filename for it in chunk]
        summary = LabelSummary(
            imnet64_version=imnet64.__version__, input=str(root), input_kind="folder",
            shard_index=index, shard_count=parts, total_inputs=len(items), inputs=len(chunk),
            labeled=len(chunk), rejects=(), inputs_sha256=names_fingerprint(names),
            first_input=names[0] if names else None, last_input=names[-1] if names else None,
            teacher=TEACHER, teacher_spec=None, num_classes=1001, top_k=top_k, batch_size=64,
            tfrecord=_facts(paths.tfrecord), csv=_facts(paths.csv), provenance=None)
        atomic.write_json(paths.summary, summary.to_json())
    return items


def sample(tmp: Path, count: int) -> tuple[Path, list[Path]]:
    root = tmp / "images"
    files = write_sample(root, count, per_folder=40)
    return root, files


def read_shard(path: Path) -> list[dict]:
    """Every record of a dataset shard as a dict of its features (python values)."""
    import tensorflow as tf

    out = []
    for _, data in iter_records(path):
        f = tf.train.Example.FromString(data).features.feature
        rec = {}
        for key, feat in f.items():
            kind = feat.WhichOneof("kind")
            values = list(getattr(feat, kind).value)
            rec[key] = values
        out.append(rec)
    return out


def read_dataset(out_dir: Path) -> dict[str, list[dict]]:
    manifest = json.loads((out_dir / "dataset.json").read_text())
    return {
        split: [r for shard in info["shards"] for r in read_shard(out_dir / shard["file"])]
        for split, info in manifest["splits"].items()
    }


def read_labeled_parts(out_dir: Path, stem: str = "part-*") -> list[LabeledImage]:
    return [
        parse_labeled(data)
        for path in sorted((out_dir / "labels").glob(f"{stem}.tfrecord"))
        for _, data in iter_records(path)
    ]
