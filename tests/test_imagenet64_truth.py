"""True labels through records and evaluation: `shard-records --labels teacher|truth` keeps
both; `evaluate` scores the student against the truth on the split and on a labeled set."""

from __future__ import annotations

import json

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.errors import UserError
from imnet64.formats import tfrecord_schema as schema
from imnet64.formats.image64 import SIZE
from imnet64.formats.manifest import load_manifest
from imnet64.records.options import ShardOptions
from imnet64.records.write import shard_records
from imnet64.train.evaluate import evaluate_run
from imnet64.train.model import ModelConfig

import numpy as np
import pytest
import tensorflow as tf
from records_support import read_dataset, sample, write_label_out_dir
from train_helpers import train_in_process

# the photos of the sample and their true class (teacher index); the "teacher" of these
# parts is right on some and wrong on others, so teacher and truth differ
TRUTH_OF_PHOTO = {"chelsea": 286, "coffee": 968, "astronaut": 611, "rocket": 813}


def photo_of(filename: str) -> str:
    return next(p for p in TRUTH_OF_PHOTO if p in filename)


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("truth")
    root, files = sample(tmp, 120)
    files = [f for f in files if any(p in f.name for p in TRUTH_OF_PHOTO)][:60]
    truths = [TRUTH_OF_PHOTO[photo_of(f.name)] for f in files]
    # the teacher errs on every third image: it says "consomme" (926)
    teacher = [(926 if i % 3 == 0 else t, 0.8) for i, t in enumerate(truths)]
    items = write_label_out_dir(tmp / "labels_out", root, files, teacher, truths=truths)
    return tmp, items


def test_records_keep_truth_and_teacher_with_either_label_source(labeled):
    tmp, items = labeled
    by_name = {it.filename: it for it in items}
    for mode in ("teacher", "truth"):
        out = tmp / f"ds_{mode}"
        shard_records(tmp / "labels_out", out, ShardOptions(val_fraction=0.25, labels=mode))
        manifest = json.loads((out / "dataset.json").read_text())
        assert manifest["options"]["labels"] == mode
        classes = {c["id"]: c["teacher_id"] for c in manifest["classes"]}
        data = read_dataset(out)
        assert data["val"] and data["train"]  # the split keeps both in both splits
        for records in data.values():
            for r in records:
                it = by_name[r[schema.FILENAME][0].decode()]
                assert r[schema.TRUTH] == [it.truth]
                assert r[schema.TEACHER_LABEL] == [it.label]
                assert classes[r[schema.TRUTH_LABEL][0]] == it.truth
                want = it.truth if mode == "truth" else it.label
                assert classes[r[schema.LABEL][0]] == want
                if mode == "truth":  # the supervised baseline: one-hot on the truth
                    assert r[schema.TOPK_LABELS] == r[schema.LABEL]
                    assert r[schema.TOPK_PROBS] == [1.0]
        if mode == "truth":
            assert sorted(classes.values()) == sorted(set(TRUTH_OF_PHOTO.values()))


def test_labels_truth_needs_parts_that_carry_truth(tmp_path):
    root, files = sample(tmp_path, 8)
    write_label_out_dir(tmp_path / "labels_out", root, files, [(282, 0.9)] * len(files))
    with pytest.raises(UserError, match="carry no true label"):
        shard_records(tmp_path / "labels_out", tmp_path / "ds", ShardOptions(labels="truth"))
    assert not (tmp_path / "ds" / "dataset.json").exists()


def _student_on(run_dir, images):
    config = json.loads((run_dir / "config.json").read_text())
    model = ModelConfig.from_json(config["model"], image_size=SIZE).build()
    best = tf.train.latest_checkpoint(str(run_dir / "checkpoints" / "best"))
    tf.train.Checkpoint(model=model).restore(best).expect_partial()
    return model(np.stack(images), training=False).numpy()


def test_evaluate_scores_the_student_against_truth_on_split_and_labeled_set(labeled):
    tmp, items = labeled
    dataset = tmp / "ds_teacher"
    if not (dataset / "dataset.json").exists():
        shard_records(tmp / "labels_out", dataset, ShardOptions(val_fraction=0.25))
    run_dir = tmp / "run"
    train_in_process(dataset, run_dir, widths=(8, 8, 8), epochs=2)
    result = evaluate_run(run_dir, batch_size=7, labeled_set=tmp / "labels_out")
    manifest = load_manifest(dataset)
    class_of = {c.teacher_id: c.id for c in manifest.classes}
    # direct: the val records' images, their truth and teacher label, the student's logits
    val = read_dataset(dataset)["val"]
    images = [tf.io.decode_png(r[schema.ENCODED][0]).numpy() for r in val]
    logits = _student_on(run_dir, images)
    truth = np.array([class_of.get(r[schema.TRUTH][0], -1) for r in val])
    teacher = np.array([class_of[r[schema.TEACHER_LABEL][0]] for r in val])
    top = np.argsort(-logits, axis=1, kind="stable")
    t = result.truth
    assert t["count"] == len(val) == result.count
    assert t["top1"] == pytest.approx(np.mean(top[:, 0] == truth))
    assert t["top5"] == pytest.approx(np.mean((top[:, :5] == truth[:, None]).any(axis=1)))
    assert t["teacher_agreement"] == pytest.approx(np.mean(top[:, 0] == teacher))
    # the trainer's own top-1 on this split is agreement with the teacher's label
    assert result.top1 == pytest.approx(t["teacher_agreement"])
    # the labeled set: every labeled image, against its truth and its teacher label
    s = result.labeled_set
    all_images = [tf.io.decode_png(it.encoded).numpy() for it in items]
    all_top = np.argsort(-_student_on(run_dir, all_images), axis=1, kind="stable")
    all_truth = np.array([class_of.get(it.truth, -1) for it in items])
    assert s["count"] == len(items)
    assert s["top1"] == pytest.approx(np.mean(all_top[:, 0] == all_truth))
    assert s["teacher_agreement"] == pytest.approx(
        np.mean(all_top[:, 0] == np.array([class_of[it.label] for it in items])))
    saved = json.loads((run_dir / "evaluation-val.json").read_text())
    assert saved["truth"]["count"] == len(val)
