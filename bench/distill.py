"""Distillation targets side by side (issue 16): `imnet64 train --targets hard|soft|online` on
the demo's data, at equal epochs, seed, model and options, measured in one run:

  - held-out top-1 agreement with the teacher and mean KL(teacher || student): crops of
    photos that gave no image to training (imnet64.pipeline.sample_images.HELDOUT_PHOTOS),
    the teacher run on the same pixels, restricted to the kept classes (train/heldout.py);
  - the same two on the val split (stored top-k; val crops come from the training photos);
  - train images/s (median over the epochs after the first, which traces the graphs).
Each run is scored with its last epoch's weights (`--checkpoint latest`).

  .venv/bin/python bench/distill.py [--workdir DIR] [--quick] [--epochs N] [--temperature 1]
      [--mixup 0] [--seed 0] [--targets hard,soft,online] [--precise-bn-batches N] [--json PATH]

`--precise-bn-batches 0` trains with BatchNorm's moving averages as imnet64 did before issue
26 (validation and the checkpoints scored here then use them); the default is train's.

The dataset and training are the demo's (DemoConfig: 2400 crops labeled by the offline
MobileNet V2, the 10 most frequent classes kept, 20 % val, its encoder and schedule, 20
epochs), built once in --workdir (default: a temporary folder). Each training runs in its own
process, one rank. `--quick` takes `imnet64 demo --quick`'s smaller data and encoder instead:
about 4x faster, but there the val predictions swing between classes from epoch to epoch
(few steps for batch norm's moving statistics), so its figures do not rank the targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = ("hard", "soft", "online")


def train(cfg) -> dict:
    """Run `imnet64 train` with `cfg` (a TrainConfig) in a fresh process; its figures."""
    from imnet64.train.history import load_history

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imnet64_cli.main", "train", *cfg.to_argv()],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"training {cfg.targets} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    history = load_history(Path(cfg.run_dir))
    rates = [r.images_per_s for r in history[1:]] or [history[-1].images_per_s]
    return {"images_per_s": statistics.median(rates), "seconds": time.monotonic() - started,
            "final_train_loss": history[-1].loss, "final_train_kl": history[-1].kl}


def measure(cfg, heldout_images, teacher) -> dict:
    from imnet64.train.evaluate import evaluate_run
    from imnet64.train.heldout import score_run

    # the last epoch's weights: equal epochs for every target (the 'best' checkpoint by val
    # loss is an early epoch here, where all three still agree)
    held = score_run(cfg.run_dir, heldout_images, teacher, checkpoint="latest")
    val = evaluate_run(cfg.run_dir, split="val", checkpoint="latest", write=False)
    return {"heldout_agreement": held.agreement, "heldout_kl": held.kl,
            "heldout_count": held.count, "val_agreement": val.teacher_agreement,
            "val_kl": val.teacher_kl, "val_top1": val.top1}


def table(results: dict, machine: str) -> str:
    rows = [f"machine: {machine}",
            "| --targets | held-out agreement | held-out KL | val agreement | val KL | "
            "train images/s |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['heldout_agreement']:.3f} | {r['heldout_kl']:.3f} | "
                    f"{r['val_agreement']:.3f} | {r['val_kl']:.3f} | {r['images_per_s']:.0f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, help="keep the data and runs here [default: temp]")
    p.add_argument("--quick", action="store_true", help="the quick demo's data and encoder")
    p.add_argument("--epochs", type=int, help="[default: the demo's]")
    p.add_argument("--temperature", type=float, default=1.0, help="of soft and online")
    p.add_argument("--mixup", type=float, default=0.0, help="alpha, for every target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", default=",".join(TARGETS), help="which, comma-separated")
    p.add_argument("--precise-bn-batches", type=int, help="[default: imnet64 train's]")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args()
    targets = [t for t in a.targets.split(",") if t]
    if not set(targets) <= set(TARGETS):
        p.error(f"--targets: choose from {', '.join(TARGETS)}")

    from imnet64.cluster.machine import machine_line
    from imnet64.pipeline.demo import DemoConfig, build_dataset, heldout_dir
    from imnet64.teacher import load_teacher
    from imnet64.train.heldout import read_images

    with tempfile.TemporaryDirectory(prefix="imnet64-bench-distill-") as tmp:
        work = a.workdir or Path(tmp)
        demo = (DemoConfig.quick if a.quick else DemoConfig)(str(work / "demo"))
        demo = dataclasses.replace(demo, epochs=a.epochs or demo.epochs, seed=a.seed)
        dataset, teacher_spec = build_dataset(demo, lambda m: print(m, flush=True))
        heldout = read_images(sorted(heldout_dir(demo).rglob("*.png")))
        teacher = load_teacher(teacher_spec)
        results = {}
        for name in targets:
            cfg = dataclasses.replace(
                demo.train_config(dataset, work / f"run-{name}"), targets=name,
                temperature=1.0 if name == "hard" else a.temperature, mixup=a.mixup,
                log_every=600)
            if a.precise_bn_batches is not None:
                cfg = dataclasses.replace(cfg, precise_bn_batches=a.precise_bn_batches)
            print(f"== train --targets {name} --precise-bn-batches {cfg.precise_bn_batches}: "
                  f"{demo.epochs} epochs, seed {a.seed}", flush=True)
            results[name] = {**train(cfg), **measure(cfg, heldout, teacher)}
            print(f"   {results[name]}", flush=True)
        machine = machine_line()
    print(table(results, machine))
    if a.json:
        from imnet64 import atomic

        atomic.write_json(a.json, {
            "config": {"epochs": demo.epochs, "temperature": a.temperature, "mixup": a.mixup,
                       "images": demo.images, "classes": demo.classes, "seed": a.seed,
                       "heldout_images": demo.heldout_images, "batch_size": demo.batch_size,
                       "widths": list(demo.widths), "repeats": list(demo.repeats),
                       "ranks": 1, "teacher": teacher_spec,
                       "precise_bn_batches": a.precise_bn_batches},
            "machine": machine, "targets": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
