"""Why validation swings on short runs (issue 26): the same checkpoint evaluated with
BatchNorm's moving statistics and with statistics recomputed on training batches.

One short run trained as the issue reported it (the demo's data, one rank, batch 32, 3 epochs
x 20 steps, `--precise-bn-batches 0`: today's moving averages), then its last checkpoint
scored on the val split AND on its own train split in inference mode:
  - with the moving statistics it trained with (what validation used until now);
  - with the statistics recomputed on N train batches (imnet64.train.precise_bn), N in
    --batches, and the seconds each recomputation took next to the seconds of a training
    epoch, per image.
If inference on the very images it trained on also collapses with the moving statistics but
not with recomputed ones, the weights are fine and the statistics are the cause (not
overfitting, not the val split). Also printed: how far each layer's moving mean is from the
recomputed one, in recomputed standard deviations.

  .venv/bin/python bench/precise_bn.py [--workdir DIR] [--epochs 3] [--steps 20]
      [--batch-size 32] [--batches 4,8,16,32,64] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(cfg) -> float:
    """`imnet64 train` in a fresh process; the seconds per epoch (median after the first)."""
    from imnet64.train.history import load_history

    proc = subprocess.run([sys.executable, "-m", "imnet64_cli.main", "train", *cfg.to_argv()],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    history = load_history(Path(cfg.run_dir))
    for r in history:
        print(f"   epoch {r.epoch}: train acc {r.accuracy:.4f} | val acc (moving statistics) "
              f"{r.val_accuracy:.4f} val loss {r.val_loss:.4f}", flush=True)
    seconds = sorted(r.seconds for r in history[1:]) or [history[-1].seconds]
    return seconds[len(seconds) // 2]


def layer_gaps(run_dir: Path, batches: int) -> list[float]:
    """Per BatchNorm layer: max over channels of |moving mean - recomputed mean| / recomputed
    standard deviation."""
    from imnet64.train.precise_bn import batchnorm_layers, recompute_for_run
    from imnet64.train.run_dir import load_trained_run

    import numpy as np

    run = load_trained_run(run_dir, "latest")
    layers = batchnorm_layers(run.model)
    before = [bn.moving_mean.numpy() for bn in layers]
    recompute_for_run(run.model, run.config, batches)
    return [float(np.max(np.abs(b - bn.moving_mean.numpy())
                         / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)))
            for b, bn in zip(before, layers)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, help="keep the data and the run here [default: temp]")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="steps per epoch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", default="4,8,16,32,64",
                   help="recompute on these numbers of train batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args()

    from imnet64.cluster.machine import machine_line
    from imnet64.pipeline.demo import DemoConfig, build_dataset
    from imnet64.train.evaluate import evaluate_run

    counts = [int(x) for x in a.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="imnet64-bench-precise-bn-") as tmp:
        work = a.workdir or Path(tmp)
        demo = dataclasses.replace(DemoConfig(str(work / "demo")), seed=a.seed)
        dataset, _ = build_dataset(demo, lambda m: print(m, flush=True))
        cfg = dataclasses.replace(
            demo.train_config(dataset, work / "run-short"), epochs=a.epochs,
            warmup_epochs=min(demo.warmup_epochs, a.epochs - 1), batch_size=a.batch_size,
            steps_per_epoch=a.steps, precise_bn_batches=0, log_every=600)
        print(f"== train: 1 rank, batch {a.batch_size}, {a.epochs} epochs x {a.steps} steps, "
              "moving statistics (--precise-bn-batches 0)", flush=True)
        epoch_s = train(cfg)
        rows = []
        for n in [0, *counts]:
            started = time.perf_counter()
            scores = {}
            for split in ("val", "train"):
                e = evaluate_run(cfg.run_dir, split=split, checkpoint="latest", write=False,
                                 precise_bn_batches=n)
                scores[split] = (e.top1, e.loss)
            if n:  # the recomputation alone (the two evaluations above each did one)
                t0 = time.perf_counter()
                layer_gaps(Path(cfg.run_dir), n)
                recompute_s = time.perf_counter() - t0
            else:
                recompute_s = 0.0
            rows.append({"batches": n, "val_top1": scores["val"][0], "val_loss": scores["val"][1],
                         "train_top1": scores["train"][0], "train_loss": scores["train"][1],
                         "recompute_s": recompute_s})
            print(f"   {rows[-1]}  ({time.perf_counter() - started:.1f} s)", flush=True)
        gaps = layer_gaps(Path(cfg.run_dir), max(counts))
        machine = machine_line()
    print(f"machine: {machine}")
    print(f"short run: 1 rank, batch {a.batch_size}, {a.epochs} epochs x {a.steps} steps, seed "
          f"{a.seed}; a training epoch took {epoch_s:.2f} s (median)")
    print("| BatchNorm statistics | val top-1 | val loss | train split top-1 (inference) | "
          "train split loss | recompute s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        what = "moving averages (momentum 0.99)" if not r["batches"] else \
            f"recomputed on {r['batches']} x {a.batch_size} train images"
        print(f"| {what} | {r['val_top1']:.4f} | {r['val_loss']:.3f} | {r['train_top1']:.4f} | "
              f"{r['train_loss']:.3f} | {r['recompute_s']:.2f} |")
    print("moving mean vs recomputed, per BatchNorm layer (max over channels, in recomputed "
          "std): " + ", ".join(f"{g:.2f}" for g in gaps))
    if a.json:
        from imnet64 import atomic

        atomic.write_json(a.json, {"machine": machine, "epochs": a.epochs, "steps": a.steps,
                                   "batch_size": a.batch_size, "seed": a.seed,
                                   "epoch_seconds": epoch_s, "rows": rows, "layer_gaps": gaps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
