"""Input pipeline throughput.

imnet64.train.input_pipeline.records_dataset on shards vs the seed notebook's
pipeline on the same PNG class folders, measured side by side in one run.

    .venv/bin/python bench/records.py [--images 4000] [--seconds 8] [--json out.json]

Prints images/s of
- seed:   tf.data.Dataset.list_files(root/*/*) -> read_file -> decode_image ->
          convert_image_dtype -> random_flip_left_right -> shuffle(5000) -> repeat ->
          batch -> prefetch (the notebook's `process_path` + `prepare_for_training`,
          without its cache file)
- shards: records_dataset(png shards) with augment (pad 4 + random crop + flip), and the
          same on raw-encoded shards (the png vs raw trade-off: bytes per image, images/s)
and what one training step of the encoder (imnet64.train.model, the seed's VGG-style net at 64x64)
consumes here: forward + backward + Adam update, images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster.machine import machine_line
from imnet64.formats.image64 import SIZE
from imnet64.formats.manifest import load_manifest
from imnet64.pipeline.sample_images import write_sample
from imnet64.records.write import ShardOptions, shard_records
from imnet64.train.input_pipeline import InputOptions, records_dataset

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def make_class_folders(work: Path, count: int) -> Path:
    """`count` real 64x64 photos in one folder per source photo (the seed's layout)."""
    flat = work / "flat"
    tree = work / "tree"
    for path in write_sample(flat, count):
        cls = path.stem.rsplit("_", 1)[0]
        (tree / cls).mkdir(parents=True, exist_ok=True)
        target = tree / cls / path.name
        if not target.exists():
            shutil.copyfile(path, target)
    return tree


def seed_pipeline(root: Path, batch_size: int) -> tf.data.Dataset:
    """The notebook's training pipeline, verbatim but for the cache file."""
    classes = np.array(sorted(p.name for p in root.iterdir()))

    def get_label(file_path):
        parts = tf.strings.split(file_path, os.path.sep)
        return parts[-2] == classes

    def decode_image(img):
        img = tf.image.decode_image(img, channels=3)
        img = tf.image.convert_image_dtype(img, tf.float32)
        img = tf.image.random_flip_left_right(img)
        return img

    def process_path(path):
        label = get_label(path)
        image = tf.io.read_file(path)
        image = decode_image(image)
        return image, label

    list_files = tf.data.Dataset.list_files(str(root / "*/*"))
    ds = list_files.map(process_path, num_parallel_calls=AUTOTUNE)
    ds = ds.shuffle(buffer_size=5000)
    ds = ds.repeat()
    ds = ds.batch(batch_size)
    return ds.prefetch(buffer_size=AUTOTUNE)


def seed_read_only(root: Path, batch_size: int) -> tf.data.Dataset:
    """The seed pipeline's I/O alone: one file open + read per image."""
    ds = tf.data.Dataset.list_files(str(root / "*/*")).map(
        tf.io.read_file, num_parallel_calls=AUTOTUNE
    )
    return ds.repeat().batch(batch_size).prefetch(AUTOTUNE)


def shards_read_only(manifest, batch_size: int) -> tf.data.Dataset:
    """The shard pipeline's I/O alone: parallel interleave of TFRecord files."""
    files = [str(p) for p in manifest.shard_paths("train")]
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=len(files), num_parallel_calls=AUTOTUNE
    )
    return ds.repeat().batch(batch_size).prefetch(AUTOTUNE)


def images_per_second(
    ds: tf.data.Dataset, batch_size: int, seconds: float, warmup: int = 20
) -> float:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        next(it)
        n += 1
    return n * batch_size / elapsed


def train_step_rate(num_classes: int, batch_size: int, seconds: float) -> float:
    """Images/s of forward + backward + Adam on the encoder (what one step consumes)."""
    from imnet64.train.model import build_model

    tf.keras.utils.set_random_seed(0)
    model = build_model(num_classes, image_size=SIZE)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    images = tf.random.uniform([batch_size, 64, 64, 3], 0, 255, dtype=tf.int32)
    images = tf.cast(images, tf.uint8)
    labels = tf.random.uniform([batch_size], 0, num_classes, dtype=tf.int32)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(tf.cast(x, tf.float32), training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(3):
        step(images, labels).numpy()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step(images, labels).numpy()
        n += 1
    return n * batch_size / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=4000, help="photos (<= ~4800 distinct)")
    ap.add_argument("--batch-size", type=int, default=32, help="the seed's batch size")
    ap.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    ap.add_argument("--repeats", type=int, default=2, help="alternating measurements each")
    ap.add_argument(
        "--shard-size-mb",
        type=float,
        default=4.0,
        help="small shards so that the images make several files to interleave",
    )
    ap.add_argument("--work", type=Path, default=None, help="keep the data here (default: tmp)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="imnet64-bench-records-"))
    t0 = time.perf_counter()
    tree = make_class_folders(work, args.images)
    datasets = {}
    for encoding in ("png", "raw"):
        out = work / f"shards-{encoding}"
        shard_records(
            tree,
            out,
            ShardOptions(val_fraction=0.0, encoding=encoding, shard_size_mb=args.shard_size_mb),
        )
        datasets[encoding] = load_manifest(out)
    setup = time.perf_counter() - t0
    m = datasets["png"]
    print(f"machine: {machine_line()}")
    print(
        f"{m.split('train').count} images in {m.num_classes} class folders; "
        f"{len(m.split('train').shards)} png shards; setup {setup:.0f} s; "
        f"{os.cpu_count()} CPUs (shared), batch {args.batch_size}",
        flush=True,
    )

    pipelines = {
        "seed": lambda: seed_pipeline(tree, args.batch_size),
        "shards_png": lambda: records_dataset(
            datasets["png"], "train", args.batch_size, InputOptions(augment=True, seed=0)
        ),
        "shards_raw": lambda: records_dataset(
            datasets["raw"], "train", args.batch_size, InputOptions(augment=True, seed=0)
        ),
    }
    pipelines["seed_io_only"] = lambda: seed_read_only(tree, args.batch_size)
    pipelines["shards_io_only"] = lambda: shards_read_only(datasets["png"], args.batch_size)
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.repeats):  # alternate, so load from other processes hits all alike
        for name, make in pipelines.items():
            rates[name].append(images_per_second(make(), args.batch_size, args.seconds))
    rate = {name: statistics.median(r) for name, r in rates.items()}
    step = train_step_rate(1000, args.batch_size, args.seconds)

    bytes_per_image = {
        enc: sum(s.bytes for s in d.split("train").shards) / d.split("train").count
        for enc, d in datasets.items()
    }
    results = {
        "images": m.split("train").count,
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "images_per_second": {k: round(v, 1) for k, v in rate.items()},
        "all_measurements": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "speedup_png_vs_seed": round(rate["shards_png"] / rate["seed"], 2),
        "speedup_raw_vs_seed": round(rate["shards_raw"] / rate["seed"], 2),
        "bytes_per_image": {k: round(v) for k, v in bytes_per_image.items()},
        "train_step_images_per_second": round(step, 1),
        "pipeline_png_over_train_step": round(rate["shards_png"] / step, 1),
        "speedup_io_only": round(rate["shards_io_only"] / rate["seed_io_only"], 2),
    }
    print(f"{'pipeline':<34}{'images/s':>10}{'vs seed':>9}")
    print(f"{'seed notebook (list_files + PNGs)':<34}{rate['seed']:>10.0f}{1.0:>8.1f}x")
    for enc in ("png", "raw"):
        r = rate[f"shards_{enc}"]
        print(f"{'records_dataset, ' + enc + ' shards':<34}{r:>10.0f}{r / rate['seed']:>8.1f}x")
    print(
        f"I/O alone (read bytes, no decode): seed {rate['seed_io_only']:.0f} images/s "
        f"(one file open per image), shards {rate['shards_io_only']:.0f} images/s "
        f"({rate['shards_io_only'] / rate['seed_io_only']:.1f}x)"
    )
    print(
        f"encoding trade-off: png {bytes_per_image['png']:.0f} B/image, "
        f"{rate['shards_png']:.0f} images/s; raw {bytes_per_image['raw']:.0f} B/image "
        f"({bytes_per_image['raw'] / bytes_per_image['png']:.2f}x the bytes), "
        f"{rate['shards_raw']:.0f} images/s"
    )
    print(
        f"one training step (encoder fwd+bwd+Adam, batch {args.batch_size}, this CPU) "
        f"consumes {step:.0f} images/s: the png pipeline supplies "
        f"{rate['shards_png'] / step:.0f}x that"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
