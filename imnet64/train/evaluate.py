"""`imnet64 evaluate`: loss, top-1, top-5, per-class accuracy and the most-confused pairs;
where the records carry the teacher's probabilities (its stored top-k), also the student's
top-1 agreement with the teacher and the mean KL(teacher || student), at T = 1 over the kept
classes (the teacher's distribution renormalised on them), as big_vision's distill configs
track them.

One pass over a split (in the manifest's order), accumulating per batch: the summed
cross-entropy (fused, on logits), top-1 and top-k hits, and a C x C confusion matrix, so
memory stays flat for 1000 classes and any split size. The per-batch step is the trainer's
validation step (imnet64.train.eval_step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imnet64 import atomic, disk_errors
from imnet64.cluster import provenance
from imnet64.errors import UserError
from imnet64.formats import provenance as provenance_schema
from imnet64.formats.manifest import load_manifest
from imnet64.train import shard_errors
from imnet64.train.config import CHECKPOINT, EVAL_BATCH_SIZE, EVAL_SPLIT, TOP_CONFUSED
from imnet64.train.eval_step import make_eval_step
from imnet64.train.input_pipeline import ONE_PASS, records_dataset
from imnet64.train.precise_bn import recompute_for_run
from imnet64.train.run_dir import load_trained_run

import numpy as np


@dataclass(frozen=True)
class ClassScore:
    id: int
    name: str
    count: int
    correct: int
    accuracy: float | None  # None when the split has no example of the class


@dataclass(frozen=True)
class Confusion:
    true_id: int
    true_name: str
    predicted_id: int
    predicted_name: str
    count: int
    share_of_true: float  # of the true class's examples


@dataclass(frozen=True)
class Evaluation:
    run_dir: str
    checkpoint: str
    dataset: str
    split: str
    count: int
    loss: float
    top1: float
    top5: float
    k: int  # the k of "top5" (fewer than 5 classes: all of them)
    per_class: list[ClassScore]
    most_confused: list[Confusion]
    # this evaluation (imnet64.cluster.provenance), and the run's: what trained the model
    provenance: dict[str, Any] = field(default_factory=dict)
    run_provenance: dict[str, Any] | None = None
    # over the `with_teacher` examples whose records carry teacher probabilities (None: none)
    teacher_agreement: float | None = None
    teacher_kl: float | None = None
    with_teacher: int = 0
    # the student against the true labels (train.truth_eval), where the images carry them:
    # on this split, and on a separate labeled set (--labeled-set); None otherwise
    truth: dict[str, Any] | None = None
    labeled_set: dict[str, Any] | None = None
    # BatchNorm statistics recomputed on this many train batches (0: the checkpoint's)
    precise_bn_batches: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    def classes_to_show(self, limit: int) -> list[ClassScore]:
        """Every class when there are at most `limit`; else the `limit` worst, lowest accuracy
        first (the most images first among equals), classes without images left out: at
        1000 classes the table stays readable (the full one is in evaluation-<split>.json)."""
        if len(self.per_class) <= limit:
            return list(self.per_class)
        scored = [c for c in self.per_class if c.accuracy is not None]
        return sorted(scored, key=lambda c: (c.accuracy, -c.count, c.id))[:limit]


def most_confused(confusion: np.ndarray, names: list[str], n: int = 10) -> list[Confusion]:
    """The largest off-diagonal cells of a confusion matrix (rows: true, columns: predicted)."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    rows = confusion.sum(axis=1)
    out = []
    for flat in order:
        t, p = np.unravel_index(flat, off.shape)
        if off[t, p] == 0:
            break
        out.append(Confusion(int(t), names[t], int(p), names[p], int(off[t, p]),
                             float(off[t, p] / rows[t])))
    return out


def _against_truth(model, manifest, split: str, batch_size: int,
                   labeled_set: str | Path | None) -> dict[str, Any]:
    from imnet64.train.truth_eval import labeled_set_against_truth, split_against_truth

    on_split = split_against_truth(model, manifest, split, batch_size)
    return {"truth": on_split.to_json() if on_split else None,
            "labeled_set": labeled_set_against_truth(
                model, manifest, labeled_set, batch_size).to_json() if labeled_set else None}


# evaluation-<split>.json: ~150 bytes per class, 1000 classes and the confusions fit in 1 MB
@disk_errors.reports("the evaluation's JSON", lambda a: a["run_dir"], lambda a: 1 << 20)
def evaluate_run(run_dir: str | Path, dataset: str | Path | None = None,
                 split: str = EVAL_SPLIT, checkpoint: str = CHECKPOINT,
                 batch_size: int = EVAL_BATCH_SIZE, top_confused: int = TOP_CONFUSED,
                 write: bool = True, labeled_set: str | Path | None = None,
                 precise_bn_batches: int = 0) -> Evaluation:
    """Evaluate a run's model on `split` of `dataset` (default: the dataset it trained on).
    Writes RUN_DIR/evaluation-<split>.json unless `write` is False. `precise_bn_batches`:
    recompute BatchNorm's statistics on that many train batches first (precise_bn)."""
    run = load_trained_run(run_dir, checkpoint)
    manifest = load_manifest(dataset or run.dataset)
    if manifest.num_classes != run.config["num_classes"]:
        raise UserError(f"dataset {manifest.root} has {manifest.num_classes} classes, the run "
                        f"was trained on {run.config['num_classes']}")
    precise_bn_batches = recompute_for_run(run.model, run.config, precise_bn_batches)
    names = run.class_names
    num_classes = manifest.num_classes
    k = min(5, num_classes)
    step = make_eval_step(run.model, top_k=k)
    loss_sum, top_k_hits, count = 0.0, 0, 0
    with_teacher, kl_sum, agreements = 0.0, 0.0, 0.0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    options = dataclasses.replace(ONE_PASS, with_soft_labels=True)
    manifest.split(split)  # a UserError naming the splits there are if it has no such split
    shard_errors.check_sizes(manifest, [split])
    batches = records_dataset(manifest, split, batch_size, options)
    for images, labels, teacher_mass in shard_errors.guarded(batches, manifest, split):
        scores = step(images, labels, teacher_mass)
        loss_sum += float(scores["loss_sum"])
        top_k_hits += int(scores["top_k_hits"])
        count += int(labels.shape[0])
        with_teacher += float(scores["with_teacher"])
        kl_sum += float(scores["kl_sum"])
        agreements += float(scores["agreements"])
        np.add.at(confusion, (labels.numpy(), scores["predicted"].numpy()), 1)
    if count == 0:
        raise UserError(f"split {split!r} of {manifest.root} is empty")
    per_class_counts = confusion.sum(axis=1)
    per_class = [
        ClassScore(c, names[c], int(per_class_counts[c]), int(confusion[c, c]),
                   float(confusion[c, c] / per_class_counts[c]) if per_class_counts[c] else None)
        for c in range(num_classes)
    ]
    result = Evaluation(
        run_dir=str(run.run_dir), checkpoint=run.checkpoint, dataset=str(manifest.root),
        split=split, count=count, loss=loss_sum / count,
        top1=float(np.trace(confusion) / count), top5=top_k_hits / count, k=k,
        per_class=per_class, most_confused=most_confused(confusion, names, top_confused),
        provenance=provenance.collect(**provenance_schema.teacher_fields(run.config)),
        run_provenance=run.config.get(provenance_schema.KEY),
        teacher_agreement=agreements / with_teacher if with_teacher else None,
        teacher_kl=kl_sum / with_teacher if with_teacher else None,
        with_teacher=int(with_teacher), precise_bn_batches=precise_bn_batches,
        **_against_truth(run.model, manifest, split, batch_size, labeled_set))
    if write:
        atomic.write_json(Path(run_dir) / f"evaluation-{split}.json", result.to_json())
    return result
