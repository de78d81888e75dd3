"""Training-step memory and speed of the encoder with and without --recompute, side by side
with the activation memory computed in docs/gradients.md.

  .venv/bin/python bench/memory.py [--batch 32] [--arch plain,residual] [--steps 6] [--rounds 2]
      [--classes 1001] [--json out.json]

Every configuration runs in its own fresh process (so one's peak cannot hide another's):
  baseline         builds the model and runs forward passes in inference mode only
  train            training steps: GradientTape, fused sparse softmax xent, Adam
  train+recompute  the same on build_model(..., recompute=True)
Per process it reports
  - allocator peak: TensorFlow's own count of bytes in tensors (get_memory_info('CPU:0')),
    the peak during the timed steps minus what was held before them (weights, Adam slots,
    the input batch): the extra memory one step needs. Each worker runs with
    TF_CPU_ALLOCATOR_USE_BFC=1: TensorFlow's default CPU allocator keeps no statistics
    ("Cannot reset memory stats") unless oneDNN is on, whose allocator (MklCPUAllocator) has
    them; oneDNN is off by default on CPUs without AVX-512 VNNI/BF16 or AMX. The BFC
    allocator counts the same way (MklCPUAllocator is a BFC allocator for all but blocks
    under 4 KiB), so the figure no longer depends on the CPU or on TF_ENABLE_ONEDNN_OPTS;
  - peak RSS (getrusage ru_maxrss) of the process, and, for the training runs, its excess
    over the baseline process (the TF runtime, graphs and libraries are in both);
  - images/s over the timed steps (after one warm-up step that traces the graph).
The computed column is imnet64.theory.activation_memory.activation_memory_bytes: the feature maps
kept for the backward pass (with recompute: checkpoints + the largest level rebuilt).
Gradient buffers and convolution temporaries come on top of it in both measured columns.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
MODES = ("baseline", "train", "train+recompute")
RESULT_TAG = "MEMORY_BENCH_RESULT "
# Read by TensorFlow when it creates its CPU device (first op), not at import.
ALLOCATOR_ENV = {"TF_CPU_ALLOCATOR_USE_BFC": "1"}


def _reset_allocator_stats(tf) -> None:
    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
    except ValueError as e:  # the default CPU allocator without oneDNN keeps no statistics
        raise SystemExit(
            f"error: TensorFlow keeps no CPU allocator statistics in this process ({e}); "
            "set TF_CPU_ALLOCATOR_USE_BFC=1 before its first op, as bench/memory.py does "
            "for its workers") from None


def _worker(mode: str, arch: str, batch: int, steps: int, classes: int) -> dict:
    """One measurement, in this (fresh) process."""
    from imnet64.formats.image64 import CHANNELS, SIZE
    from imnet64.train.model import build_model

    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = build_model(classes, image_size=SIZE, arch=arch,
                        recompute=(mode == "train+recompute"))
    images = tf.random.uniform([batch, SIZE, SIZE, CHANNELS], 0, 255, seed=1)
    labels = tf.random.uniform([batch], 0, classes, tf.int32, seed=2)

    if mode == "baseline":

        @tf.function
        def run():
            return model(images, training=False)

    else:
        optimizer = tf.keras.optimizers.Adam(1e-3)

        @tf.function
        def run():
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
                )
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

    _ = run().numpy()  # warm-up: traces the graph, creates Adam's slots
    _reset_allocator_stats(tf)
    held = tf.config.experimental.get_memory_info("CPU:0")["current"]
    start = time.perf_counter()
    for _ in range(steps):
        _ = run().numpy()
    seconds = time.perf_counter() - start
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return {
        "mode": mode,
        "arch": arch,
        "batch": batch,
        "steps": steps,
        "allocator_held_bytes": held,
        "allocator_step_peak_bytes": peak - held,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "images_per_s": batch * steps / seconds,
        "params": model.count_params(),
    }


def _measure(mode: str, arch: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--arch", arch,
        "--batch", str(args.batch), "--steps", str(args.steps), "--classes", str(args.classes),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **ALLOCATOR_ENV})
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"error: {mode} {arch} failed (exit {done.returncode})")
    return json.loads(lines[-1][len(RESULT_TAG):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--arch", default="plain,residual", help="comma-separated")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per training mode")
    parser.add_argument("--classes", type=int, default=1001)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        os.environ.update(ALLOCATOR_ENV)  # before TensorFlow's first op in this process
        result = _worker(args.worker, args.arch, args.batch, args.steps, args.classes)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0

    from imnet64.theory.activation_memory import activation_memory_bytes
    from imnet64.train.model import build_model  # noqa: F401  (fail early if the model is missing)

    rows = []
    for arch in [a.strip() for a in args.arch.split(",") if a.strip()]:
        base = _measure("baseline", arch, args)
        # Rounds alternate the two training modes, so a load change on the shared machine
        # hits both alike; each figure is the median over rounds.
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES[1:]}
        for _ in range(args.rounds):
            for mode in MODES[1:]:
                runs[mode].append(_measure(mode, arch, args))
        for mode in MODES[1:]:
            r = dict(runs[mode][0])
            for key in ("allocator_step_peak_bytes", "peak_rss_bytes", "images_per_s"):
                r[key] = statistics.median(run[key] for run in runs[mode])
            r["images_per_s_rounds"] = [run["images_per_s"] for run in runs[mode]]
            r["recompute"] = mode == "train+recompute"
            r["computed_activation_bytes"] = activation_memory_bytes(
                args.batch, arch, (3, 3, 3), (32, 64, 128), recompute=r["recompute"],
                num_classes=args.classes,
            )
            r["baseline_peak_rss_bytes"] = base["peak_rss_bytes"]
            r["rss_over_baseline_bytes"] = r["peak_rss_bytes"] - base["peak_rss_bytes"]
            rows.append(r)

    from imnet64.cluster.machine import machine_line

    print(f"machine: {machine_line()}")
    print(f"encoder at 64x64, repeats (3,3,3), widths (32,64,128), batch {args.batch}, "
          f"float32, {args.classes} classes, {args.steps} timed steps per process, "
          f"median of {args.rounds} processes per training mode")
    print("MiB: computed = feature maps kept for backward (docs/gradients.md); alloc.peak = "
          "TF allocator peak of a step over what it held before; RSS-base = peak RSS minus "
          "the inference-only baseline process")
    print(f"{'arch':9} {'recompute':9} {'computed':>9} {'alloc.peak':>10} "
          f"{'peak RSS':>9} {'RSS-base':>9} {'images/s':>8}")
    for r in rows:
        print(f"{r['arch']:9} {'yes' if r['recompute'] else 'no':9} "
              f"{r['computed_activation_bytes'] / MIB:9.1f} "
              f"{r['allocator_step_peak_bytes'] / MIB:10.1f} "
              f"{r['peak_rss_bytes'] / MIB:9.1f} {r['rss_over_baseline_bytes'] / MIB:9.1f} "
              f"{r['images_per_s']:8.1f}")
    summary = {}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        base_row, rec = (next(r for r in rows if r["arch"] == arch and r["recompute"] == flag)
                      for flag in (False, True))
        summary[arch] = {
            "computed_ratio":
                rec["computed_activation_bytes"] / base_row["computed_activation_bytes"],
            "allocator_peak_ratio":
                rec["allocator_step_peak_bytes"] / base_row["allocator_step_peak_bytes"],
            "speed_ratio": rec["images_per_s"] / base_row["images_per_s"],
        }
        s = summary[arch]
        print(f"{arch}: recompute/no-recompute  computed {s['computed_ratio']:.2f}x  "
              f"allocator peak {s['allocator_peak_ratio']:.2f}x  "
              f"images/s {s['speed_ratio']:.2f}x")
    if args.json:
        from imnet64.atomic import write_json

        # Compact (make bench flattens it into a table): MiB figures per configuration.
        configs = {
            r["arch"] + ("+recompute" if r["recompute"] else ""): {
                "computed_activation_mib": round(r["computed_activation_bytes"] / MIB, 1),
                "allocator_step_peak_mib": round(r["allocator_step_peak_bytes"] / MIB, 1),
                "peak_rss_mib": round(r["peak_rss_bytes"] / MIB, 1),
                "rss_over_baseline_mib": round(r["rss_over_baseline_bytes"] / MIB, 1),
                "images_per_s": round(r["images_per_s"], 1),
            }
            for r in rows
        }
        write_json(args.json, {"machine": machine_line(), "batch": args.batch,
                               "classes": args.classes,
                               "steps": args.steps, "rounds": args.rounds,
                               "configs": configs, "recompute_vs_not": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
