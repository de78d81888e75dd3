"""One shard of `imnet64 shard-records`: its examples encoded (with the teacher's labels or
the class folder's), the TFRecord file written atomically, then its `.shards/` sidecar
(examples, bytes, sha256, class counts, plan hash), which marks it finished for exactly that
plan. A shard is written by one process alone, and what it holds depends only on its
`ShardJob`: not on the worker, the rank or the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from imnet64 import atomic
from imnet64.errors import UserError
from imnet64.formats import image64
from imnet64.formats.shard_check import check_shard
from imnet64.formats.shard_sidecar import ShardSidecar, sidecar_path
from imnet64.records.source import ItemReader, SourceRef
from imnet64.records.split import Example, KeptClass, PlannedShard


@dataclass(frozen=True)
class ShardJob:
    """One shard to write; picklable, so it can go to a worker process."""

    ref: SourceRef
    out_dir: str
    plan: PlannedShard
    plan_hash: str
    encoding: str
    classes: tuple[KeptClass, ...]
    labels: str = "teacher"  # ShardOptions.labels


def _dataset_example(job: ShardJob, ex: Example, original, label_of_teacher: dict[int, int]):
    from imnet64.formats.tfrecord_schema import DatasetExample

    kept = job.classes[ex.label]
    if job.ref.kind == "labels":
        data, filename = original.encoded, original.filename
        teacher_label, confidence = original.label, original.confidence
        topk_ids, topk_probs = original.topk_ids, original.topk_probs
    else:  # class folders: the folder is the label; soft label = one-hot
        data, filename = original, ex.item.filename
        teacher_label, confidence = kept.teacher_id, 1.0
        topk_ids, topk_probs = (kept.teacher_id,), (1.0,)
    try:
        encoded, converted = image64.encode64(data, job.encoding)
        if not converted and job.ref.kind != "labels":
            image64.check_decodes(data)  # the teacher never decoded folder files
    except image64.ImageError as e:
        raise UserError(f"cannot decode {filename} from SOURCE: {e}") from None
    truth = original.truth if job.ref.kind == "labels" else None
    if job.labels == "truth":  # the supervised baseline: targets are the true class alone
        topk_ids, topk_probs, confidence = (truth,), (1.0,), 1.0
    if job.ref.kind == "labels":
        topk_labels = tuple(label_of_teacher.get(t, -1) for t in topk_ids)
    else:
        topk_labels = (ex.label,)
    example = DatasetExample(
        encoded=encoded,
        encoding=job.encoding,
        filename=filename,
        label=ex.label,
        class_name=kept.name,
        teacher_label=teacher_label,
        confidence=confidence,
        topk_ids=tuple(topk_ids),
        topk_probs=tuple(topk_probs),
        topk_labels=topk_labels,
        truth=truth,
        truth_label=None if truth is None else label_of_teacher.get(truth, -1),
    )
    return example, converted


def write_shard(job: ShardJob, progress: Callable[[int], None] | None = None) -> ShardSidecar:
    """Write one shard file and then its sidecar; returns the sidecar's content."""
    from imnet64.formats.tfrecord_schema import serialize_dataset_example

    import tensorflow as tf

    out = Path(job.out_dir) / job.plan.file
    label_of_teacher = {c.teacher_id: c.id for c in job.classes if c.teacher_id >= 0}
    class_counts = [0] * len(job.classes)
    converted = 0
    examples = job.plan.examples
    # Read in storage order (part, offset / file name), write in the plan's shuffled order:
    # forward reads through each label part instead of a random seek per image. The
    # shard's serialized records (about --shard-size-mb) are held meanwhile.
    serialized: list[bytes] = [b""] * len(examples)
    storage_order = sorted(
        range(len(examples)),
        key=lambda i: (examples[i].item.part, examples[i].item.offset, examples[i].item.filename),
    )
    reader = ItemReader(job.ref)
    try:
        for n, i in enumerate(storage_order, 1):
            ex = examples[i]
            example, was_converted = _dataset_example(
                job, ex, reader.read(ex.item), label_of_teacher
            )
            serialized[i] = serialize_dataset_example(example)
            class_counts[ex.label] += 1
            converted += was_converted
            if progress and n % 256 == 0:
                progress(256)
    finally:
        reader.close()
    with atomic.atomic_path(out) as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in serialized:
                writer.write(record)
        sha, size = atomic.sha256_file(tmp), tmp.stat().st_size
    if progress:
        progress(len(examples) % 256)
    sidecar = ShardSidecar(file=job.plan.file, examples=len(examples), bytes=size, sha256=sha,
                           class_counts=tuple(class_counts), converted=converted,
                           plan=job.plan_hash)
    atomic.write_json(sidecar_path(job.out_dir, job.plan.file), sidecar.to_json())
    return sidecar


def finished_sidecar(out_dir: Path, plan: PlannedShard, plan_hash: str) -> ShardSidecar | None:
    """The sidecar of a shard finished for exactly this plan, else None."""
    try:
        sidecar = ShardSidecar.from_json(atomic.read_json(sidecar_path(out_dir, plan.file)))
        if sidecar.plan != plan_hash:
            return None
        # the file the plan names (the sidecar names the same one unless edited by hand)
        if not check_shard(out_dir, replace(sidecar.shard_info, file=plan.file), "size").ok:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sidecar
