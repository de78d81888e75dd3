"""`imnet64 evaluate`: its numbers equal a direct computation on the same records."""

from __future__ import annotations

import json

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.errors import UserError
from imnet64.formats.image64 import SIZE
from imnet64.formats.manifest import load_manifest
from imnet64.formats.tfrecord_schema import parse_example
from imnet64.train.evaluate import evaluate_run
from imnet64.train.model import ModelConfig

import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import build_tiny_dataset
from train_helpers import SIX_CLASSES, train_in_process


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    dataset = build_tiny_dataset(root / "data", per_class=20, classes=SIX_CLASSES, shards=2)
    train_in_process(dataset, root / "run")
    return dataset, root / "run"


def _direct(dataset, run_dir, split="val"):
    """Logits from an independently restored model on records parsed straight from the
    shard files; metrics in float64 numpy (log-sum-exp cross-entropy)."""
    config = json.loads((run_dir / "config.json").read_text())
    model = ModelConfig.from_json(config["model"], image_size=SIZE).build()
    best = tf.train.latest_checkpoint(str(run_dir / "checkpoints" / "best"))
    tf.train.Checkpoint(model=model).restore(best).expect_partial()
    manifest = load_manifest(dataset)
    images, labels = [], []
    for path in manifest.shard_paths(split):
        for record in tf.data.TFRecordDataset(str(path)):
            image, label, _, _ = parse_example(record, manifest.num_classes, manifest.encoding)
            images.append(image.numpy())
            labels.append(int(label))
    logits = model(np.stack(images), training=False).numpy().astype(np.float64)
    labels = np.array(labels)
    top = logits.max(axis=1, keepdims=True)
    log_z = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]
    loss = float(np.mean(log_z - logits[np.arange(len(labels)), labels]))
    predicted = logits.argmax(axis=1)
    rank_of_label = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    return labels, predicted, loss, rank_of_label, best


def test_evaluate_equals_a_direct_computation(trained):
    dataset, run_dir = trained
    labels, predicted, loss, rank_of_label, best = _direct(dataset, run_dir)
    result = evaluate_run(run_dir, batch_size=7)  # a batch size that leaves a remainder
    assert result.checkpoint == best
    assert result.count == len(labels) == 30  # 6 classes x 20 x 0.25
    assert result.loss == pytest.approx(loss, rel=1e-6, abs=1e-7)
    assert result.top1 == pytest.approx(np.mean(predicted == labels), abs=1e-12)
    assert result.k == 5
    assert result.top5 == pytest.approx(np.mean(rank_of_label < 5), abs=1e-12)
    for c in result.per_class:
        mine = labels == c.id
        assert c.name == SIX_CLASSES[c.id]
        assert (c.count, c.correct) == (int(mine.sum()), int((predicted[mine] == c.id).sum()))
        assert c.accuracy == pytest.approx(np.mean(predicted[mine] == c.id))
    pairs = {}
    for t, p in zip(labels, predicted):
        if t != p:
            pairs[(int(t), int(p))] = pairs.get((int(t), int(p)), 0) + 1
    got = {(m.true_id, m.predicted_id): m.count for m in result.most_confused}
    assert got == dict(sorted(pairs.items(), key=lambda kv: -kv[1])[:10])
    counts = [m.count for m in result.most_confused]
    assert counts == sorted(counts, reverse=True)
    saved = json.loads((run_dir / "evaluation-val.json").read_text())
    assert saved["loss"] == result.loss and saved["count"] == 30


def test_evaluate_train_split_and_cli_json(trained, capsys):
    from imnet64_cli.main import main

    dataset, run_dir = trained
    labels, predicted, loss, _, _ = _direct(dataset, run_dir, split="train")
    assert main(["evaluate", str(run_dir), "--split", "train", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == len(labels) and report["split"] == "train"
    assert report["loss"] == pytest.approx(loss, rel=1e-6, abs=1e-7)
    assert main(["evaluate", str(run_dir)]) == 0
    table = capsys.readouterr().out
    assert "top-1" in table and "chelsea" in table and "grace_hopper" in table


def test_evaluate_user_errors(trained, tmp_path):
    dataset, run_dir = trained
    with pytest.raises(UserError, match="no split 'test'"):
        evaluate_run(run_dir, split="test", write=False)
    with pytest.raises(UserError, match="not a training run"):
        evaluate_run(tmp_path)
    other = build_tiny_dataset(tmp_path / "four", per_class=8)
    with pytest.raises(UserError, match="has 4 classes"):
        evaluate_run(run_dir, dataset=other, write=False)
