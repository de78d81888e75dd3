"""Training throughput, side by side in one run:

  1. `imnet64 train` reading the TFRecord shards (the real input pipeline), 1 rank;
  2. the same model and the same training step (imnet64.train.make_train_step) fed from
     tensors already in memory: the ceiling the input pipeline is measured against
     (goal: pipeline / in-memory >= 0.9);
  3. `imnet64 train --np 2`: 2 Horovod ranks (same batch per rank) on this machine, vs 1.

  .venv/bin/python bench/train.py [--dataset DIR] [--steps 20] [--epochs 3] [--batch-size 32]
      [--widths 32,64,128] [--repeats 3,3,3] [--rounds 3] [--json PATH]

Every measurement runs in a fresh process, --rounds times per method, round-robin with the
order rotated; each figure is the best of its rounds (this VM at times gives a process one
core's worth for a whole run), all rounds are in the JSON. Throughput = images / wall time of
the training loop of epochs 2.. (epoch 1 traces the graphs), the loop including each epoch's start
(iterator and shuffle buffer for the pipeline). Without --dataset, a dataset of real 64x64
photo crops (16 classes, labels = photo of origin) is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_TAG = "TRAIN_BENCH_RESULT "


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _model_args(a) -> list[str]:
    return ["--widths", a.widths, "--repeats", a.repeats, "--batch-size", str(a.batch_size),
            "--epochs", str(a.epochs), "--warmup-epochs", "1", "--steps-per-epoch", str(a.steps),
            "--log-every", "600"]


def _steady(run_dir: Path, batch_total: int, steps: int) -> dict:
    epochs = json.loads((run_dir / "history.json").read_text())["epochs"][1:]
    seconds = sum(e["seconds"] for e in epochs)
    rate = len(epochs) * steps * batch_total / seconds
    mfu = [e["mfu"] for e in epochs if e.get("mfu") is not None]
    return {"images_per_s": rate, "seconds": seconds, "epochs_timed": len(epochs),
            "mfu": sum(mfu) / len(mfu) if mfu else None}


def run_cli(a, dataset: Path, work: Path, np_: int) -> dict:
    # a fresh RUN_DIR each time: in an existing one, `imnet64 train` resumes (and a finished
    # run would just report its old history)
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-np{np_}-", dir=work)) / "run"
    cmd = [sys.executable, "-m", "imnet64_cli.main", "train", str(dataset), str(run_dir),
           *_model_args(a)] + (["--np", str(np_)] if np_ > 1 else [])
    started = time.monotonic()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"imnet64 train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = _steady(run_dir, a.batch_size * np_, a.steps)
    result["process_seconds"] = time.monotonic() - started
    return result


def in_memory_worker(a, dataset: Path) -> dict:
    """This process: the trainer's step on in-memory batches, the trainer's loop shape."""
    import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
    from imnet64.checkpointing import TrainState
    from imnet64.data import training_dataset
    from imnet64.distributed import init_world
    from imnet64.manifest import load_manifest
    from imnet64.model import build_model, flops_per_image
    from imnet64.peak_flops import mfu, peak_per_rank
    from imnet64.schedule import Schedule
    from imnet64.train import make_train_step

    import tensorflow as tf

    world = init_world()
    manifest = load_manifest(dataset)
    tf.keras.utils.set_random_seed(0)
    model = build_model(manifest.num_classes, widths=[int(w) for w in a.widths.split(",")],
                        repeats=[int(r) for r in a.repeats.split(",")])
    optimizer = tf.keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    state = TrainState()
    step = make_train_step(model, optimizer, world, state)
    schedule = Schedule(1e-3, warmup_epochs=1, final_epochs=a.epochs - 1)
    # decode everything once; then batches are tensors in memory (cycled)
    ds = training_dataset(manifest, "train", a.batch_size, shuffle=False, repeat=False)
    batches = [(images, labels) for images, labels in ds]
    no_stop = tf.constant(False)
    seconds, index = [], 0
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        for _step in range(a.steps):
            images, labels = batches[index % len(batches)]
            index += 1
            optimizer.learning_rate.assign(
                schedule.at_step(int(state.global_step.numpy()), a.steps))
            step(images, labels, no_stop)
        seconds.append(time.perf_counter() - t0)
    timed = sum(seconds[1:])
    rate = (a.epochs - 1) * a.steps * a.batch_size / timed
    peak = peak_per_rank("fp32").flops_per_s
    return {"images_per_s": rate, "seconds": timed, "epochs_timed": a.epochs - 1,
            "mfu": mfu(rate, flops_per_image(model), peak), "batches_in_memory": len(batches)}


def run_in_memory(a, dataset: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--dataset", str(dataset),
           "--steps", str(a.steps), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
           "--widths", a.widths, "--repeats", a.repeats]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise SystemExit(f"in-memory worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def make_dataset(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from imnet64.sample_images import PHOTOS

    from tiny_dataset import build_tiny_dataset

    classes = tuple(Path(name).stem for _, name in PHOTOS)
    return build_tiny_dataset(folder, per_class=60, classes=classes, shards=4)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, help="an imnet64 dataset [default: built here]")
    p.add_argument("--steps", type=int, default=20, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=3, help="epochs (the first is not timed)")
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--widths", default="32,64,128")
    p.add_argument("--repeats", default="3,3,3")
    p.add_argument("--rounds", type=int, default=3,
                   help="measurements of each method, round-robin; the best counts")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.epochs < 2:
        p.error("--epochs must be at least 2 (the first one is not timed)")
    if a.worker:
        print(RESULT_TAG + json.dumps(in_memory_worker(a, a.dataset)), flush=True)
        return 0

    import imnet64  # noqa: F401  (Keras 2 before TensorFlow, for the dataset writer)
    from imnet64.machine import machine_line

    print(f"machine: {machine_line()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="imnet64-bench-train-") as tmp:
        work = Path(tmp)
        dataset = a.dataset or make_dataset(work / "data")
        print(f"model widths {a.widths} repeats {a.repeats}, batch {a.batch_size}/rank, "
              f"{a.steps} steps x {a.epochs} epochs (epoch 1 not timed); dataset {dataset}",
              flush=True)
        runs: dict[str, list[dict]] = {"in_memory": [], "pipeline_1_rank": [],
                                       "pipeline_2_ranks": []}
        measure = {"in_memory": lambda: run_in_memory(a, dataset),
                   "pipeline_1_rank": lambda: run_cli(a, dataset, work, 1),
                   "pipeline_2_ranks": lambda: run_cli(a, dataset, work, 2)}
        labels = {"in_memory": "in-memory tensors, 1 rank", "pipeline_1_rank":
                  "imnet64 train, 1 rank", "pipeline_2_ranks": "imnet64 train --np 2"}
        names = list(measure)
        for r in range(a.rounds):  # round-robin, order rotated: a slow spell hits all alike
            for name in names[r % 3:] + names[:r % 3]:
                runs[name].append(measure[name]())
                print(f"  round {r} {labels[name]:26s}: "
                      f"{runs[name][-1]['images_per_s']:8.1f} images/s", flush=True)
        best = {k: max(v, key=lambda m: m["images_per_s"]) for k, v in runs.items()}
        memory, pipeline, two = best["in_memory"], best["pipeline_1_rank"], best[
            "pipeline_2_ranks"]
        for name in names:
            print(f"  best of {a.rounds}: {labels[name]:26s}: "
                  f"{best[name]['images_per_s']:8.1f} images/s")

    ratio_pipeline = pipeline["images_per_s"] / memory["images_per_s"]
    ratio_ranks = two["images_per_s"] / pipeline["images_per_s"]
    print(f"pipeline / in-memory = {ratio_pipeline:.3f} (goal >= 0.9)")
    print(f"2 ranks / 1 rank     = {ratio_ranks:.3f} (on {os.cpu_count()} cores shared by both "
          "ranks: each rank gets half the cores)")
    results = {
        "config": {"widths": a.widths, "repeats": a.repeats, "batch_size_per_rank": a.batch_size,
                   "steps_per_epoch": a.steps, "epochs": a.epochs, "cores": os.cpu_count()},
        "in_memory": memory, "pipeline_1_rank": pipeline, "pipeline_2_ranks": two,
        "pipeline_over_in_memory": ratio_pipeline, "two_ranks_over_one": ratio_ranks,
        "goal_pipeline_over_in_memory": 0.9, "rounds": a.rounds,
        "images_per_s_all_rounds": {k: [m["images_per_s"] for m in v] for k, v in runs.items()},
    }
    if a.json:
        from imnet64 import atomic

        atomic.write_json(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
