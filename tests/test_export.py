"""`imnet64 export`: what it writes reloads (elsewhere, too) and predicts what the run's
model predicts, to 1e-6; class names travel as an asset; OUT appears atomically."""

from __future__ import annotations

import json
import shutil

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.errors import UserError
from imnet64.formats.image64 import SIZE
from imnet64.formats.manifest import load_manifest
from imnet64.formats.tfrecord_schema import parse_example
from imnet64.train.export import export_run
from imnet64.train.model import ModelConfig

import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import build_tiny_dataset
from train_helpers import SIX_CLASSES, train_in_process


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    dataset = build_tiny_dataset(root / "data", per_class=16, classes=SIX_CLASSES, shards=1)
    train_in_process(dataset, root / "run", epochs=2, arch="residual")
    return dataset, root / "run"


def _reference(dataset, run_dir):
    """Real val images, and the run's model restored independently of export.py."""
    config = json.loads((run_dir / "config.json").read_text())
    model = ModelConfig.from_json(config["model"], image_size=SIZE).build()
    best = tf.train.latest_checkpoint(str(run_dir / "checkpoints" / "best"))
    tf.train.Checkpoint(model=model).restore(best).expect_partial()
    manifest = load_manifest(dataset)
    images = np.stack([
        parse_example(r, manifest.num_classes)[0].numpy()
        for r in tf.data.TFRecordDataset([str(p) for p in manifest.shard_paths("val")])])
    return model, images


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_savedmodel_serving_signature_reloads_equal_and_moves(trained, tmp_path):
    dataset, run_dir = trained
    out = tmp_path / "exported"
    result = export_run(run_dir, out)
    assert result.max_abs_diff <= 1e-6 and result.checked_images == 24
    assert _leftovers(tmp_path) == []
    # the asset: one class name per line, line i = class i
    assert (out / "assets" / "class_names.txt").read_text().splitlines() == list(SIX_CLASSES)
    # moved elsewhere it still loads (asset paths are relative to the SavedModel)
    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    serve = tf.saved_model.load(str(moved)).signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 64, 64, 3]
    model, images = _reference(dataset, run_dir)
    outputs = serve(images=tf.constant(images))
    expected = tf.nn.softmax(model(images, training=False)).numpy()
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    assert outputs["class_id"].numpy().tolist() == expected.argmax(axis=1).tolist()
    assert [n.decode() for n in outputs["class_name"].numpy()] == [
        SIX_CLASSES[i] for i in expected.argmax(axis=1)]


def test_encoder_only_returns_the_pooled_features(trained, tmp_path):
    dataset, run_dir = trained
    out = tmp_path / "encoder"
    export_run(run_dir, out, encoder_only=True)
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    model, images = _reference(dataset, run_dir)
    encoder = tf.keras.Model(model.input, model.get_layer("encoder_output").output)
    features = serve(images=tf.constant(images))["features"].numpy()
    assert features.shape == (24, 16)  # widths[-1]
    np.testing.assert_allclose(features, encoder(images).numpy(), rtol=0, atol=1e-6)
    assert not (out / "assets").exists() or not list((out / "assets").iterdir())


def test_keras_format_reloads_equal(trained, tmp_path):
    dataset, run_dir = trained
    out = tmp_path / "model.keras"
    result = export_run(run_dir, out, fmt="keras")
    assert result.max_abs_diff <= 1e-6 and out.is_file()
    loaded = tf.keras.models.load_model(str(out), compile=False)
    model, images = _reference(dataset, run_dir)
    np.testing.assert_allclose(loaded(images).numpy(),
                               tf.nn.softmax(model(images, training=False)).numpy(),
                               rtol=0, atol=1e-6)
    assert _leftovers(tmp_path) == []


def test_existing_out_is_kept_unless_forced_and_errors_leave_nothing(trained, tmp_path):
    _, run_dir = trained
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="exists"):
        export_run(run_dir, out)
    assert (out / "mine.txt").read_text() == "user data"
    export_run(run_dir, out, force=True)
    assert (out / "saved_model.pb").is_file() and not (out / "mine.txt").exists()
    with pytest.raises(UserError, match=r"\.keras"):
        export_run(run_dir, tmp_path / "model.h5", fmt="keras")
    empty_run = tmp_path / "not-a-run"
    empty_run.mkdir()
    with pytest.raises(UserError, match="not a training run"):
        export_run(empty_run, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert _leftovers(tmp_path) == []


def test_export_cli(trained, tmp_path, capsys):
    from imnet64_cli.main import main

    _, run_dir = trained
    assert main(["export", str(run_dir), str(tmp_path / "m"), "--checkpoint", "latest"]) == 0
    assert "reloaded probabilities match on 24 images" in capsys.readouterr().out
    assert main(["export", str(run_dir), str(tmp_path / "m")]) == 2
    assert "error:" in capsys.readouterr().err


def test_check_images_without_the_dataset_say_why_they_are_random(tmp_path, caplog):
    from imnet64.train.export import _check_images

    with caplog.at_level("WARNING", logger="imnet64.train.export"):
        images = _check_images(tmp_path / "gone", n=4)
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.uint8
    [record] = caplog.records
    assert "random images" in record.getMessage() and "gone" in record.getMessage()
