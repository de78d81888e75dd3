"""TensorFlow's oneDNN kernels off vs on: `imnet64 label`, the teacher alone and the
encoder's training step, side by side in one run.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at its first use, so every measurement is a
fresh process with the variable set to 0 or to 1 (explicitly: imnet64 only sets it when it is
unset). The two settings alternate round-robin, the order rotated each round, so a background
load slows both alike; each figure is the best round (medians are in the JSON). One of the
two is what TensorFlow picks by itself on this CPU (on only with AVX-512 VNNI/BF16, AVX-VNNI
or AMX): the header says which.

Per process, after one untimed pass of each (graph tracing):
  label          imnet64.label.run.label_shard on --images real 64x64 photos with the offline
                 teacher: decode, resize to 224, teacher, softmax/top-k, records + CSV
  teacher alone  teacher.logits on the same photos, preloaded and resized (its ceiling)
  train step     imnet64.train.train_step.make_train_step (Adam) on in-memory uint8 batches of the
                 photos: the seed encoder (widths 32,64,128, repeats 3,3,3), 1001 classes

  .venv/bin/python bench/onednn.py [--images 256] [--rounds 3] [--train-steps 8]
      [--train-batch 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster.machine import ONEDNN_ENV, describe, tf_default_onednn

REPO = Path(__file__).resolve().parents[1]
RESULT_TAG = "ONEDNN_BENCH_RESULT "
SETTINGS = ("0", "1")
WORKLOADS = ("label", "teacher_alone", "train_step")


def _label_and_teacher(tf, images: Path, count: int, batch: int
                       ) -> dict[str, tuple[float, float]]:
    from imnet64.label.image_decode import decode_image
    from imnet64.label.inputs import open_inputs
    from imnet64.label.options import LabelOptions
    from imnet64.label.run import label_shard, plan_shard
    from imnet64.teacher import load_teacher

    teacher = load_teacher("offline")
    inputs = open_inputs(images)
    pixels = [decode_image(inputs.read(i)).image for i in range(len(inputs))]
    inputs.close()
    preloaded = [
        tf.image.resize(tf.image.convert_image_dtype(pixels[i:i + batch], tf.float32),
                        teacher.image_size)
        for i in range(0, len(pixels), batch)
    ]
    work = Path(tempfile.mkdtemp(prefix="onednn-label."))
    def teacher_alone() -> None:
        for x in preloaded:
            teacher.logits(x).numpy()

    def label(out: Path) -> None:
        plan = plan_shard(images, out, 0, 1)
        label_shard(plan, teacher, LabelOptions(batch_size=batch))
        plan.inputs.close()

    try:
        times = {}
        for timed in (False, True):  # the first pass traces the graphs
            times["teacher_alone"] = _timed(teacher_alone)
            times["label"] = _timed(functools.partial(label, work / f"out-{timed}"))
        return times
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all this process's threads) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _train_step(tf, images: Path, batch: int, steps: int) -> tuple[float, float]:
    from imnet64.cluster.world import init_world
    from imnet64.formats.image64 import SIZE
    from imnet64.label.image_decode import decode_image
    from imnet64.label.inputs import open_inputs
    from imnet64.train.checkpoints import TrainState
    from imnet64.train.model import build_model
    from imnet64.train.train_step import make_train_step

    import numpy as np

    world = init_world()
    inputs = open_inputs(images)
    pixels = np.stack([decode_image(inputs.read(i)).image for i in range(len(inputs))])
    inputs.close()
    tf.keras.utils.set_random_seed(0)
    model = build_model(1001, image_size=SIZE, widths=(32, 64, 128), repeats=(3, 3, 3))
    optimizer = tf.keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, world, TrainState())
    batches = [(tf.constant(pixels[i:i + batch]), tf.constant(np.arange(batch) % 1001,
                                                               tf.int32))
               for i in range(0, len(pixels) - batch + 1, batch)]
    no_stop = tf.constant(False)
    step(*batches[0], no_stop)  # traces the graph

    def run() -> None:
        for k in range(steps):
            loss, *_ = step(*batches[k % len(batches)], no_stop)
        loss.numpy()

    return _timed(run)


def worker(args: argparse.Namespace) -> dict:
    """One process: oneDNN as TF_ENABLE_ONEDNN_OPTS says; TensorFlow reports what it did."""
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    times = _label_and_teacher(tf, args.images_dir, args.images, args.batch_size)
    times["train_step"] = _train_step(tf, args.images_dir, args.train_batch, args.train_steps)
    counts = {"label": args.images, "teacher_alone": args.images,
              "train_step": args.train_batch * args.train_steps}
    return {"setting": os.environ.get(ONEDNN_ENV), "onednn": _pywrap_util_port.IsMklEnabled(),
            "images_per_s": {w: counts[w] / wall for w, (wall, _) in times.items()},
            "cpu_ms_per_image": {w: 1000 * cpu / counts[w] for w, (_, cpu) in times.items()}}


def _measure(setting: str, args: argparse.Namespace, images: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--images-dir",
           str(images), "--images", str(args.images), "--batch-size", str(args.batch_size),
           "--train-batch", str(args.train_batch), "--train-steps", str(args.train_steps)]
    env = {**os.environ, ONEDNN_ENV: setting, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"error: the worker with {ONEDNN_ENV}={setting} failed "
                         f"(exit {done.returncode})")
    result = json.loads(lines[-1][len(RESULT_TAG):])
    if result["onednn"] != (setting == "1"):
        raise SystemExit(f"error: {ONEDNN_ENV}={setting} but TensorFlow says oneDNN is "
                         f"{'on' if result['onednn'] else 'off'}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="photos labeled per pass")
    parser.add_argument("--batch-size", type=int, default=64, help="label/teacher batch")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps(worker(args)), flush=True)
        return 0

    from imnet64.cluster.machine import cpu_flags
    from imnet64.pipeline.sample_images import write_sample

    os.environ.setdefault("IMNET64_HOME", str(REPO / ".cache" / "imnet64"))
    machine = describe()
    default = tf_default_onednn(cpu_flags(Path("/proc/cpuinfo").read_text()))
    default_text = {True: "on", False: "off", None: "unknown"}[default]
    print(f"machine: {machine.line()}")
    print(f"TensorFlow's own default here: oneDNN {default_text}; {args.images} photos "
          f"(label batch {args.batch_size}), train step batch {args.train_batch} x "
          f"{args.train_steps} steps; {args.rounds} rounds of fresh processes", flush=True)
    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    cpu: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bench-onednn.") as tmp:
        images = Path(tmp) / "images"
        write_sample(images, args.images)
        for r in range(args.rounds):
            for setting in SETTINGS[r % 2:] + SETTINGS[:r % 2]:
                result = _measure(setting, args, images)
                runs[setting].append(result["images_per_s"])
                cpu[setting].append(result["cpu_ms_per_image"])
                rates = "  ".join(f"{w} {result['images_per_s'][w]:6.1f} "
                                  f"({result['cpu_ms_per_image'][w]:5.1f})" for w in WORKLOADS)
                print(f"  round {r} {ONEDNN_ENV}={setting}: {rates} images/s "
                      f"(CPU ms/image)", flush=True)

    best = {s: {w: max(run[w] for run in runs[s]) for w in WORKLOADS} for s in SETTINGS}
    median = {s: {w: statistics.median(run[w] for run in runs[s]) for w in WORKLOADS}
              for s in SETTINGS}
    # CPU time per image barely moves with the share of the cores a process gets; on a
    # shared machine it is the steadier of the two figures
    cpu_ms = {s: {w: min(run[w] for run in cpu[s]) for w in WORKLOADS} for s in SETTINGS}
    on_over_off = {w: best["1"][w] / best["0"][w] for w in WORKLOADS}
    cpu_off_over_on = {w: cpu_ms["0"][w] / cpu_ms["1"][w] for w in WORKLOADS}
    print()
    print(f"{'images/s (best)':30s}" + "".join(f"{w:>15s}" for w in WORKLOADS))
    for s in SETTINGS:
        mark = " (TF default)" if default is not None and default == (s == "1") else ""
        print(f"{'oneDNN ' + ('on' if s == '1' else 'off') + mark:30s}"
              + "".join(f"{best[s][w]:15.1f}" for w in WORKLOADS))
    print(f"{'on / off':30s}" + "".join(f"{on_over_off[w]:14.2f}x" for w in WORKLOADS))
    print(f"{'CPU ms/image off / on':30s}"
          + "".join(f"{cpu_off_over_on[w]:14.2f}x" for w in WORKLOADS))
    if args.json:
        from imnet64.atomic import write_json

        write_json(args.json, {
            "machine": machine.line(), "tf_default_onednn": default,
            "images": args.images, "batch_size": args.batch_size,
            "train_batch": args.train_batch, "train_steps": args.train_steps,
            "rounds": args.rounds,
            "images_per_s": {"off": best["0"], "on": best["1"]},
            "images_per_s_median": {"off": median["0"], "on": median["1"]},
            "cpu_ms_per_image": {"off": cpu_ms["0"], "on": cpu_ms["1"]},
            "on_over_off": {w: round(v, 3) for w, v in on_over_off.items()},
            "cpu_off_over_on": {w: round(v, 3) for w, v in cpu_off_over_on.items()},
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
