"""fp32 vs bf16 side by side in one run (issue 27): `imnet64 label --precision` and
`imnet64 train --precision`, for speed and for what the numbers become.

Label, speed: the same real 64x64 photos (the bench's sample, `--label-images`) labeled with
the offline MobileNet V2, fp32 and bf16 alternating round by round (the order flips every
round), each round a full `imnet64.label.run` call (read, decode, teacher, top-k, part
files), the teacher loaded once. Per round: images/s and CPU-seconds per image (process CPU
time of all threads / images: it moves far less than wall-clock time when other processes
share the cores).
Label, agreement with fp32: top-1 identical share and max |dp| over the stored top-k
(position by position, and the top-1 probability), on the bench's photos and on the demo's
images (the demo labels them in fp32; they are labeled again in bf16 here).

Train, speed and quality: `imnet64 train` on the demo's data and setting (DemoConfig: its
encoder, batch, schedule, epochs, seed; one rank), fp32 and bf16 alternating round by round,
each in its own process. Per round: train images/s (median over the epochs after the first),
CPU-seconds per trained image (the process's whole CPU time, start-up, tracing and
validation included, / images trained); per precision the
final figures at equal epochs and seed, scored with the last epoch's weights: val loss,
top-1, KL to the teacher and agreement, held-out KL and agreement (bench/distill.py's
measures), so a faster but worse default would show here.

  .venv/bin/python bench/precision.py [--label-rounds 3] [--train-rounds 2] [--epochs N]
      [--label-images 384] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)

import numpy as np

PRECISIONS = ("fp32", "bf16")


def _order(round_index: int) -> tuple[str, ...]:
    """fp32 first in even rounds, bf16 first in odd ones: a load that comes and goes
    slows both alike."""
    return PRECISIONS if round_index % 2 == 0 else PRECISIONS[::-1]


# ---- label ----------------------------------------------------------------------------------


def _part_records(out_dir: Path) -> dict[str, tuple[tuple[int, ...], tuple[float, ...]]]:
    """input name -> (top-k ids, top-k probabilities) of every label part in out_dir."""
    from imnet64.formats.tfrecord_file import iter_records
    from imnet64.formats.tfrecord_schema import parse_labeled

    found = {}
    for part in sorted((out_dir / "labels").glob("part-*.tfrecord")):
        for _, raw in iter_records(part):
            item = parse_labeled(raw)
            found[item.filename] = (item.topk_ids, item.topk_probs)
    return found


def agreement(reference: Path, other: Path) -> dict:
    """Top-1 identical share and max |dp| of the stored top-k, `other` against `reference`."""
    a, b = _part_records(reference), _part_records(other)
    names = sorted(set(a) & set(b))
    if not names:
        raise SystemExit(f"no image labeled in both {reference} and {other}")
    same = [a[n][0][0] == b[n][0][0] for n in names]
    dp_position = [np.abs(np.subtract(a[n][1], b[n][1])).max() for n in names]
    dp_top1 = [abs(a[n][1][0] - b[n][1][0]) for n in names]
    return {"images": len(names), "top1_identical_pct": 100.0 * float(np.mean(same)),
            "max_abs_dp_topk": float(max(dp_position)),
            "mean_abs_dp_topk": float(np.mean(dp_position)),
            "max_abs_dp_top1": float(max(dp_top1))}


def _label_round(images: Path, out: Path, teacher, precision: str) -> dict:
    from imnet64.label.options import LabelOptions
    from imnet64.label.run import run

    options = LabelOptions(teacher_spec="offline", precision=precision, force=True)
    cpu, wall = time.process_time(), time.perf_counter()
    summary, _ = run(images, out, options, index=0, count=1, teacher=teacher)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = summary["labeled"]
    return {"images_per_s": n / wall, "cpu_s_per_image": cpu / n,
            "ran_as": summary["precision"]}


def label_bench(work: Path, images: Path, demo_images: Path, demo_labels: Path, rounds: int,
                log) -> dict:
    from imnet64.teacher import load_teacher

    teacher = load_teacher("offline")
    _label_round(images, work / "label-warm", teacher, "fp32")  # first-use costs, not timed
    _label_round(images, work / "label-warm", teacher, "bf16")
    per_round = []
    for r in range(rounds):
        row = {}
        for precision in _order(r):
            row[precision] = _label_round(images, work / f"label-{precision}", teacher,
                                          precision)
            log(f"label round {r + 1} {precision}: {row[precision]['images_per_s']:.1f} "
                f"images/s, {1000 * row[precision]['cpu_s_per_image']:.1f} CPU-ms/image")
        per_round.append(row)
    demo_bf16 = work / "label-demo-bf16"
    _label_round(demo_images, demo_bf16, teacher, "bf16")
    return {
        "rounds": per_round,
        "median": {p: {k: statistics.median(r[p][k] for r in per_round)
                       for k in ("images_per_s", "cpu_s_per_image")} for p in PRECISIONS},
        "agreement_bench_images": agreement(work / "label-fp32", work / "label-bf16"),
        "agreement_demo_images": agreement(demo_labels, demo_bf16),
    }


# ---- train ----------------------------------------------------------------------------------


def _train_round(cfg) -> dict:
    from imnet64.train.history import load_history

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imnet64_cli.main", "train", *cfg.to_argv()],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"training {cfg.precision} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    history = load_history(Path(cfg.run_dir))
    rates = [r.images_per_s for r in history[1:]] or [history[-1].images_per_s]
    trained = round(sum(r.images_per_s * r.seconds for r in history)) or None
    return {"images_per_s": statistics.median(rates), "seconds": time.monotonic() - started,
            "cpu_s": cpu, "trained_images": trained,
            "final_train_loss": history[-1].loss}


def _scores(cfg, heldout_images, teacher) -> dict:
    from imnet64.train.evaluate import evaluate_run
    from imnet64.train.heldout import score_run

    held = score_run(cfg.run_dir, heldout_images, teacher, checkpoint="latest")
    val = evaluate_run(cfg.run_dir, split="val", checkpoint="latest", write=False)
    return {"val_loss": val.loss, "val_top1": val.top1, "val_kl": val.teacher_kl,
            "val_agreement": val.teacher_agreement, "heldout_kl": held.kl,
            "heldout_agreement": held.agreement}


def train_bench(work: Path, demo, dataset: Path, seed: int, rounds: int, log) -> dict:
    from imnet64.pipeline.demo import heldout_dir
    from imnet64.teacher import load_teacher
    from imnet64.train.heldout import read_images

    per_round, final = [], {}
    for r in range(rounds):
        row = {}
        for precision in _order(r):
            cfg = dataclasses.replace(demo.train_config(dataset, work / f"run-{precision}-{r}"),
                                      precision=precision, seed=seed, log_every=600)
            row[precision] = _train_round(cfg)
            images = row[precision]["trained_images"] or (
                cfg.epochs * (cfg.steps_per_epoch or 0) * cfg.batch_size)
            row[precision]["cpu_s_per_image"] = (row[precision]["cpu_s"] / images
                                                 if images else None)
            log(f"train round {r + 1} {precision}: {row[precision]['images_per_s']:.1f} "
                f"images/s, loss {row[precision]['final_train_loss']:.4f}")
            if precision not in final:
                final[precision] = cfg
        per_round.append(row)
    heldout = read_images(sorted(heldout_dir(demo).rglob("*.png")))
    teacher = load_teacher("offline")
    return {
        "rounds": per_round,
        "median_images_per_s": {p: statistics.median(r[p]["images_per_s"] for r in per_round)
                                for p in PRECISIONS},
        "final": {p: _scores(cfg, heldout, teacher) for p, cfg in final.items()},
    }


# ---- report ---------------------------------------------------------------------------------


def table(results: dict) -> str:
    rows = [f"machine: {results['machine']}", "(other helpers' jobs shared the 2 cores: "
            "CPU-seconds per image are the steadier figure)", ""]
    if "label" in results:
        rows += _label_rows(results["label"])
    rows += _train_rows(results["train"], results["config"]["seed"])
    return "\n".join(rows)


def _label_rows(lab: dict) -> list[str]:
    rows = ["| round | label fp32 img/s | label bf16 img/s | label fp32 CPU-ms/img | "
            "label bf16 CPU-ms/img |", "|---|---|---|---|---|"]
    for i, r in enumerate(lab["rounds"], 1):
        rows.append(f"| {i} | {r['fp32']['images_per_s']:.1f} | {r['bf16']['images_per_s']:.1f}"
                    f" | {1000 * r['fp32']['cpu_s_per_image']:.1f} | "
                    f"{1000 * r['bf16']['cpu_s_per_image']:.1f} |")
    for what in ("agreement_bench_images", "agreement_demo_images"):
        a = lab[what]
        rows.append(f"label bf16 vs fp32, {what.split('_', 1)[1]} ({a['images']}): top-1 "
                    f"identical {a['top1_identical_pct']:.2f} %, max |dp| top-k "
                    f"{a['max_abs_dp_topk']:.4f} (mean {a['mean_abs_dp_topk']:.5f}), max |dp| "
                    f"top-1 {a['max_abs_dp_top1']:.4f}")
    return rows + [""]


def _train_rows(tr: dict, seed: int) -> list[str]:
    rows = ["| round | train fp32 img/s | train bf16 img/s | train fp32 CPU-ms/img | "
             "train bf16 CPU-ms/img |", "|---|---|---|---|---|"]
    for i, r in enumerate(tr["rounds"], 1):
        cpu = {p: (f"{1000 * r[p]['cpu_s_per_image']:.2f}" if r[p]["cpu_s_per_image"] else "-")
               for p in PRECISIONS}
        rows.append(f"| {i} | {r['fp32']['images_per_s']:.1f} | {r['bf16']['images_per_s']:.1f}"
                    f" | {cpu['fp32']} | {cpu['bf16']} |")
    rows += ["", f"| train, final (equal epochs, seed {seed}) | val loss | val top-1 | val KL | "
             "val agreement | held-out KL | held-out agreement |", "|---|---|---|---|---|---|---|"]
    for p, s in tr["final"].items():
        rows.append(f"| {p} | {s['val_loss']:.4f} | {s['val_top1']:.3f} | {s['val_kl']:.4f} | "
                    f"{s['val_agreement']:.3f} | {s['heldout_kl']:.3f} | "
                    f"{s['heldout_agreement']:.3f} |")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, help="keep the data and runs here [default: temp]")
    p.add_argument("--label-images", type=int, default=384)
    p.add_argument("--label-rounds", type=int, default=3)
    p.add_argument("--train-rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, help="[default: the demo's]")
    p.add_argument("--seed", type=int, help="of the training runs [default: the demo's]")
    p.add_argument("--train-only", action="store_true",
                   help="skip the label part (e.g. another --seed of the training figures)")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args()

    from imnet64.cluster.machine import machine_line
    from imnet64.pipeline.demo import DemoConfig, build_dataset
    from imnet64.pipeline.sample_images import write_sample

    def log(message: str) -> None:
        print(message, flush=True)

    with tempfile.TemporaryDirectory(prefix="imnet64-bench-precision-") as tmp:
        work = (a.workdir or Path(tmp)).resolve()
        demo = DemoConfig(str(work / "demo"))
        demo = dataclasses.replace(demo, epochs=a.epochs or demo.epochs)
        seed = demo.seed if a.seed is None else a.seed  # training's only: the data stay
        dataset, _ = build_dataset(demo, log)  # labels the demo's images in fp32
        images = work / "bench-images"
        if not images.exists():
            write_sample(images, a.label_images, per_folder=1000)
        demo_root = Path(demo.workdir)
        results = {"machine": machine_line(), "config": {
            "label_images": a.label_images, "label_rounds": a.label_rounds,
            "train_rounds": a.train_rounds, "epochs": demo.epochs, "seed": seed,
            "batch_size": demo.batch_size, "ranks": 1, "train_only": a.train_only}}
        # the demo's INPUT (its photos and broken files): the same names as its fp32 parts
        if not a.train_only:
            results["label"] = label_bench(work, images, demo_root / "images",
                                           demo_root / "labeling", a.label_rounds, log)
        results["train"] = train_bench(work / f"seed-{seed}", demo, dataset, seed,
                                       a.train_rounds, log)
    tr = results["train"]["median_images_per_s"]
    results["bf16_over_fp32"] = {"train_images_per_s": tr["bf16"] / tr["fp32"]}
    if "label" in results:
        lab = results["label"]["median"]
        results["bf16_over_fp32"].update(
            label_images_per_s=lab["bf16"]["images_per_s"] / lab["fp32"]["images_per_s"],
            label_cpu_per_image_fp32_over_bf16=(lab["fp32"]["cpu_s_per_image"]
                                                / lab["bf16"]["cpu_s_per_image"]))
    print(table(results))
    print(f"bf16 / fp32 (medians): {results['bf16_over_fp32']}")
    if a.json:
        from imnet64 import atomic

        atomic.write_json(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
