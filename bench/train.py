"""Training throughput, side by side in one run, and how even it is from epoch to epoch:

  1. `imnet64 train` reading the TFRecord shards (the real input pipeline), 1 rank;
  2. the same model and the same training step (imnet64.train.train_step.make_train_step) fed from
     tensors already in memory: the ceiling the input pipeline is measured against
     (goal: pipeline / in-memory >= 0.9 in every round);
  3. `imnet64 train --np 2`: 2 Horovod ranks (same batch per rank) on this machine, vs 1,
     with every epoch's images/s (goal: slowest epoch / median epoch >= 0.85 in every round).

  .venv/bin/python bench/train.py [--dataset DIR] [--steps 20] [--epochs 16] [--batch-size 32]
      [--widths 32,64,128] [--repeats 3,3,3] [--rounds 3] [--json PATH]

Every measurement runs in a fresh process, --rounds times per method, round-robin with the
order rotated, so that the two sides of a ratio are measured next to each other; every
round is reported (no best-of). An epoch's images/s = its images / the wall time of its
training loop (history.json's `seconds`: the loop including the epoch's pipeline start-up
and the iterator's end); epoch 1 traces the graphs and is not counted. Also reported per
epoch: the input stall % (time blocked waiting for a batch) and, with 2 ranks, how long the
other rank waited for rank 0's end-of-epoch writes. Without --dataset, a dataset of real
64x64 photo crops (16 classes, labels = photo of origin) is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_TAG = "TRAIN_BENCH_RESULT "
GOAL_PIPELINE = 0.9
GOAL_SPREAD = 0.85


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _model_args(a) -> list[str]:
    return ["--widths", a.widths, "--repeats", a.repeats, "--batch-size", str(a.batch_size),
            "--epochs", str(a.epochs), "--warmup-epochs", "1", "--steps-per-epoch", str(a.steps),
            "--log-every", "600"]


def _summary(epoch_seconds: list[float], images_per_epoch: int) -> dict:
    """Figures of the timed epochs (all but the first)."""
    timed = epoch_seconds[1:]
    rates = [images_per_epoch / s for s in timed]
    median = statistics.median(rates)
    return {"images_per_s": len(timed) * images_per_epoch / sum(timed), "seconds": sum(timed),
            "epochs_timed": len(timed), "epoch_images_per_s": [round(r, 2) for r in rates],
            "slowest_over_median_epoch": min(rates) / median,
            # when most epochs stall, the median is a stalled one too: this one still shows it
            "slowest_over_fastest_epoch": min(rates) / max(rates),
            "fastest_over_median_epoch": max(rates) / median}


def _from_history(run_dir: Path, images_per_epoch: int) -> dict:
    epochs = json.loads((run_dir / "history.json").read_text())["epochs"]
    result = _summary([e["seconds"] for e in epochs], images_per_epoch)
    mfu = [e["mfu"] for e in epochs[1:] if e.get("mfu") is not None]
    result["mfu"] = sum(mfu) / len(mfu) if mfu else None
    result["epoch_input_stall_pct"] = [round(e.get("input_stall_pct") or 0.0, 2)
                                       for e in epochs[1:]]
    waits = [e["rank0_wait_s"] for e in epochs if e.get("rank0_wait_s") is not None]
    if waits:
        result["epoch_rank0_wait_s"] = [round(w, 3) for w in waits]
    return result


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
    result = _from_history(run_dir, a.steps * a.batch_size * np_)
    result["process_seconds"] = time.monotonic() - started
    return result


def in_memory_worker(a, dataset: Path) -> dict:
    """This process: the trainer's step on in-memory batches, the trainer's loop shape."""
    import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
    from imnet64.cluster.world import init_world
    from imnet64.formats.image64 import SIZE
    from imnet64.formats.manifest import load_manifest
    from imnet64.train.checkpoints import TrainState
    from imnet64.train.input_pipeline import InputOptions, records_dataset
    from imnet64.train.model import build_model, flops_per_image
    from imnet64.train.peak_flops import mfu, peak_per_rank
    from imnet64.train.schedule import Schedule
    from imnet64.train.train_step import make_train_step

    import tensorflow as tf

    world = init_world()
    manifest = load_manifest(dataset)
    tf.keras.utils.set_random_seed(0)
    model = build_model(manifest.num_classes, image_size=SIZE,
                        widths=[int(w) for w in a.widths.split(",")],
                        repeats=[int(r) for r in a.repeats.split(",")])
    optimizer = tf.keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    state = TrainState()
    step = make_train_step(model, optimizer, world, state)
    schedule = Schedule(1e-3, warmup_epochs=1, final_epochs=a.epochs - 1)
    # decode everything once; then batches are tensors in memory (cycled)
    ds = records_dataset(manifest, "train", a.batch_size,
                          InputOptions(shuffle=False, repeat=False))
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
            _, stop, _finite = step(images, labels, no_stop)
            bool(stop)  # the trainer reads the stop flag after every step
        seconds.append(time.perf_counter() - t0)
    result = _summary(seconds, a.steps * a.batch_size)
    peak = peak_per_rank("fp32").flops_per_s
    result.update(mfu=mfu(result["images_per_s"], flops_per_image(model), peak),
                  batches_in_memory=len(batches))
    return result


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
    from imnet64.pipeline.sample_images import PHOTOS

    from tiny_dataset import build_tiny_dataset

    classes = tuple(Path(name).stem for _, name in PHOTOS)
    return build_tiny_dataset(folder, per_class=60, classes=classes, shards=4)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, help="an imnet64 dataset [default: built here]")
    p.add_argument("--steps", type=int, default=20, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=16, help="epochs (the first is not timed)")
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--widths", default="32,64,128")
    p.add_argument("--repeats", default="3,3,3")
    p.add_argument("--rounds", type=int, default=3,
                   help="measurements of each method, round-robin; every round is reported")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.epochs < 3:
        p.error("--epochs must be at least 3 (the first one is not timed)")
    if a.worker:
        print(RESULT_TAG + json.dumps(in_memory_worker(a, a.dataset)), flush=True)
        return 0

    import imnet64  # noqa: F401  (Keras 2 before TensorFlow, for the dataset writer)

    with tempfile.TemporaryDirectory(prefix="imnet64-bench-train-") as tmp:
        work = Path(tmp)
        dataset = a.dataset or make_dataset(work / "data")
        print(f"model widths {a.widths} repeats {a.repeats}, batch {a.batch_size}/rank, "
              f"{a.steps} steps x {a.epochs} epochs (epoch 1 not timed); dataset {dataset}; "
              f"load average {_load()}", flush=True)
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
                m = measure[name]()
                m["load_average_after"] = _load()
                runs[name].append(m)
                print(f"  round {r} {labels[name]:26s}: {m['images_per_s']:8.1f} images/s, "
                      f"slowest epoch / median {m['slowest_over_median_epoch']:.3f}, "
                      f"/ fastest {m['slowest_over_fastest_epoch']:.3f} "
                      f"(load {m['load_average_after']})", flush=True)
                print("    images/s per epoch: "
                      + " ".join(f"{x:.1f}" for x in m["epoch_images_per_s"]), flush=True)
                if "epoch_input_stall_pct" in m:
                    print("    input stall % per epoch: "
                          + " ".join(f"{x:.1f}" for x in m["epoch_input_stall_pct"]), flush=True)
                if "epoch_rank0_wait_s" in m:
                    print("    other rank's wait for rank 0's end-of-epoch writes (s): "
                          + " ".join(f"{x:.2f}" for x in m["epoch_rank0_wait_s"]), flush=True)

    rate = {k: [m["images_per_s"] for m in v] for k, v in runs.items()}
    pipeline_ratios = [p / m for p, m in zip(rate["pipeline_1_rank"], rate["in_memory"])]
    rank_ratios = [t / o for t, o in zip(rate["pipeline_2_ranks"], rate["pipeline_1_rank"])]
    spreads = [m["slowest_over_median_epoch"] for m in runs["pipeline_2_ranks"]]
    extremes = [m["slowest_over_fastest_epoch"] for m in runs["pipeline_2_ranks"]]
    print("pipeline / in-memory, each round: " + ", ".join(f"{x:.3f}" for x in pipeline_ratios)
          + f" (goal >= {GOAL_PIPELINE} in each)")
    print("2 ranks: slowest / median epoch, each round: " + ", ".join(f"{x:.3f}" for x in spreads)
          + f" (goal >= {GOAL_SPREAD} in each); slowest / fastest: "
          + ", ".join(f"{x:.3f}" for x in extremes))
    print("2 ranks / 1 rank, each round: " + ", ".join(f"{x:.3f}" for x in rank_ratios)
          + f" (on {os.cpu_count()} cores shared by both ranks: each rank gets half the cores)")
    results = {
        "config": {"widths": a.widths, "repeats": a.repeats, "batch_size_per_rank": a.batch_size,
                   "steps_per_epoch": a.steps, "epochs": a.epochs, "cores": os.cpu_count(),
                   "rounds": a.rounds},
        # the worst round counts for the goals
        "pipeline_over_in_memory": min(pipeline_ratios),
        "pipeline_over_in_memory_each_round": pipeline_ratios,
        "goal_pipeline_over_in_memory": GOAL_PIPELINE,
        "two_ranks_slowest_over_median_epoch": min(spreads),
        "two_ranks_slowest_over_median_epoch_each_round": spreads,
        "two_ranks_slowest_over_fastest_epoch_each_round": extremes,
        "goal_slowest_over_median_epoch": GOAL_SPREAD,
        "two_ranks_over_one": statistics.median(rank_ratios),
        "two_ranks_over_one_each_round": rank_ratios,
        "images_per_s_each_round": rate,
        "runs": runs,
    }
    if a.json:
        from imnet64 import atomic

        atomic.write_json(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
