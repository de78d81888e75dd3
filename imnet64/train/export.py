"""`imnet64 export`: a trained run as a SavedModel (or a .keras file) people can serve.

SavedModel: the `serving_default` signature takes `images`, uint8 [N, 64, 64, 3] (raw
pixels; the model scales them), and returns `probabilities` [N, C] (softmax of the logits),
`class_id` [N] and `class_name` [N]; the class names ship as the asset
`assets/class_names.txt` (one per line, line i = class i) and the name lookup reads it.
With `encoder_only`, the signature returns `features` [N, D]: the pooled encoder output
(the seed's last example), for transfer learning.

`.keras`: the Keras model with a softmax layer on top (or the encoder alone).

Both are written to a temporary folder/file next to OUT, reloaded and checked (outputs equal
to the in-memory model's to 1e-6 on real images of the run's val split when the dataset is
there, else on fixed random images), and only then renamed to OUT.

What made the model (imnet64.cluster.provenance: code, host, job, and the teacher of the labels it
learned from), the run and checkpoint it came from are in `OUT/imnet64_model.json` for a
SavedModel (inside the folder; TF ignores it) and in `OUT.json` beside a .keras file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imnet64 import atomic, disk_errors
from imnet64.cluster import provenance
from imnet64.errors import UserError
from imnet64.formats import provenance as provenance_schema
from imnet64.formats.image64 import CHANNELS, SIZE
from imnet64.train import run_files
from imnet64.train.checkpoints import one_line
from imnet64.train.config import CHECKPOINT, EXPORT_FORMATS
from imnet64.train.model import ENCODER_OUTPUT
from imnet64.train.precise_bn import recompute_for_run
from imnet64.train.run_dir import TrainedRun, load_trained_run

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

TOLERANCE = 1e-6
CLASS_NAMES_ASSET = "class_names.txt"
METADATA_FILE = "imnet64_model.json"  # inside a SavedModel folder; OUT.json beside a .keras
METADATA_FORMAT = "imnet64.train.export/1"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    encoder_only: bool
    checkpoint: str
    checked_images: int
    max_abs_diff: float
    output: str  # the compared output's name
    metadata: Path  # provenance and origin (metadata_path)


def metadata_path(out: str | Path) -> Path:
    """Where an export's metadata is: inside a SavedModel folder, beside a .keras file."""
    out = Path(out)
    return out.with_name(f"{out.name}.json") if out.suffix == ".keras" else out / METADATA_FILE


def read_metadata(out: str | Path) -> dict:
    return atomic.read_json(metadata_path(out))


def _metadata(run: TrainedRun, fmt: str, encoder_only: bool) -> dict:
    return {
        "format": METADATA_FORMAT,
        "model_format": fmt,
        "encoder_only": encoder_only,
        "run_dir": str(Path(run.run_dir).resolve()),
        "checkpoint": run.checkpoint,
        "num_classes": len(run.class_names),
        "dataset_fingerprint": run.config.get("dataset_fingerprint"),
        # this export, and the training session that wrote the run's config.json
        provenance_schema.KEY: provenance.collect(**provenance_schema.teacher_fields(run.config)),
        "run_provenance": run.config.get(provenance_schema.KEY),
    }


class ServingModule(tf.Module):
    """What the SavedModel holds: the Keras model, the class-name asset and the signature."""

    def __init__(self, model: tf.keras.Model, class_names_file: str | None, encoder_only: bool):
        super().__init__()
        self.model = model
        self.encoder_only = encoder_only
        if not encoder_only:
            self.class_names = tf.saved_model.Asset(class_names_file)
            self.class_table = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(
                    self.class_names, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                    tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
                default_value="")

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, CHANNELS], tf.uint8,
                                                name="images")])
    def serve(self, images):
        outputs = tf.cast(self.model(images, training=False), tf.float32)
        if self.encoder_only:
            return {"features": outputs}
        probabilities = tf.nn.softmax(outputs, axis=-1)
        class_id = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "class_id": class_id,
                "class_name": self.class_table.lookup(class_id)}


def _check_images(dataset: Path, n: int = 64) -> np.ndarray:
    """Real images from the run's val split if the dataset is there, else fixed random ones."""
    try:
        from imnet64.formats.manifest import load_manifest
        from imnet64.train.input_pipeline import ONE_PASS, records_dataset

        manifest = load_manifest(dataset)
        split = "val" if "val" in manifest.splits else next(iter(manifest.splits))
        for images, _ in records_dataset(manifest, split, n, ONE_PASS).take(1):
            return images.numpy()
        reason = f"its {split} split is empty"
    except Exception as e:  # noqa: BLE001  (no dataset: random pixels still check the export)
        reason = one_line(e)
    log.warning("export check on %d random images, not the run's dataset %s (%s)", n, dataset,
             reason)
    return np.random.RandomState(0).randint(0, 256, (n, SIZE, SIZE, CHANNELS)).astype(np.uint8)


@contextlib.contextmanager
def _staging(out: Path, suffix: str):
    """A temporary path next to OUT (same filesystem: the final rename is atomic)."""
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield folder / f"export{suffix}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _replace(staged: Path, out: Path, force: bool) -> None:
    if out.exists() or out.is_symlink():
        if not force:
            raise UserError(f"{out} exists (pass --force to replace it)")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(staged, out)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(staged, out)


def _save_savedmodel(staged: Path, model: tf.keras.Model, class_names: list[str],
                     encoder_only: bool, images: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Save the serving module to `staged`, reload it and return its output on `images`
    (checking the class names it returns against `expected`'s top-1 on the way)."""
    names_file = staged.parent / CLASS_NAMES_ASSET
    names_file.write_text("".join(f"{name}\n" for name in class_names), "utf-8")
    module = ServingModule(model, str(names_file), encoder_only)
    tf.saved_model.save(module, str(staged), signatures={"serving_default": module.serve})
    serve = tf.saved_model.load(str(staged)).signatures["serving_default"]
    outputs = serve(images=tf.constant(images))
    if encoder_only:
        return outputs["features"].numpy()
    want = [class_names[i] for i in expected.argmax(axis=1)]
    if [n.decode("utf-8") for n in outputs["class_name"].numpy()] != want:
        raise UserError("export check failed: class names from the asset differ")
    return outputs["probabilities"].numpy()


def _save_keras(staged: Path, model: tf.keras.Model, encoder_only: bool,
                images: np.ndarray) -> np.ndarray:
    """Save the model (with a softmax on top unless `encoder_only`) to `staged`, reload it
    and return its output on `images`."""
    keras_model = model if encoder_only else tf.keras.Model(
        model.input, tf.keras.layers.Softmax(name="probabilities")(model.output),
        name=f"{model.name}_probabilities")
    keras_model.save(str(staged))
    return tf.keras.models.load_model(str(staged), compile=False)(images,
                                                                  training=False).numpy()


def _export_space(args: dict) -> int | None:
    """The model once staged and once reloaded for the check, plus its graph: about twice
    a checkpoint of the run (which also holds the optimizer's moments) and 1 MB."""
    one = run_files.checkpoint_bytes(args["run_dir"])
    return 2 * one + (1 << 20) if one else None


@disk_errors.reports("the export", lambda a: Path(a["out"]).parent, _export_space)
def export_run(run_dir: str | Path, out: str | Path, *, fmt: str = EXPORT_FORMATS[0],
               encoder_only: bool = False, checkpoint: str = CHECKPOINT,
               force: bool = False, precise_bn_batches: int = 0) -> ExportResult:
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if fmt == "keras" and out.suffix != ".keras":
        raise UserError(f"a Keras export is a file ending in .keras, not {out.name!r}")
    if (out.exists() or out.is_symlink()) and not force:
        raise UserError(f"{out} exists (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    run = load_trained_run(run_dir, checkpoint)
    # (as `evaluate --precise-bn-batches N` did: the same images, the same statistics)
    recomputed = recompute_for_run(run.model, run.config, precise_bn_batches)
    model = run.model
    if encoder_only:
        model = tf.keras.Model(model.input, model.get_layer(ENCODER_OUTPUT).output,
                               name="encoder")
    images = _check_images(run.dataset)
    expected = model(images, training=False).numpy()
    output = "features" if encoder_only else "probabilities"
    if not encoder_only:
        expected = tf.nn.softmax(expected, axis=-1).numpy()

    with _staging(out, ".keras" if fmt == "keras" else "") as staged:
        if fmt == "savedmodel":
            got = _save_savedmodel(staged, model, run.class_names, encoder_only, images,
                                   expected)
        else:
            got = _save_keras(staged, model, encoder_only, images)
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= TOLERANCE:
            raise UserError(f"export check failed: reloaded {output} differ by {diff:.3g} "
                            f"(> {TOLERANCE})")
        metadata = {**_metadata(run, fmt, encoder_only), "precise_bn_batches": recomputed}
        if fmt == "savedmodel":  # inside the folder: appears with it in the rename
            atomic.write_json(staged / METADATA_FILE, metadata)
        _replace(staged, out, force)
    if fmt == "keras":
        atomic.write_json(metadata_path(out), metadata)
    return ExportResult(out, fmt, encoder_only, run.checkpoint, len(images), diff, output,
                        metadata_path(out))
