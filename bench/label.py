"""Labeling speed and memory: `imnet64 label` vs the seed notebook's loop vs the teacher alone.

Measured in one run, on the same real 64x64 photos and the same teacher (the offline
MobileNet V2 SavedModel):

  label         imnet64.label.run (library call: enumerate, read + PIL decode, resize, teacher,
                softmax/top-k, TFRecord + CSV + JSON written atomically)
  seed loop     the notebook's cells verbatim in spirit: tf.data read_file + decode_png +
                convert_image_dtype + resize 224 (parallel map, batch 64, prefetch),
                hub.KerasLayer in a tf.keras Sequential, model.predict per batch (verbose=0,
                as TF 2.1's default), argmax, then os.rename of every file into
                <folder>/<class>/ -- run on a fresh COPY of the images each round
  teacher alone teacher.logits on preloaded float32 [64, 224, 224, 3] batches: the ceiling
  seed loop, BN  (extra, --no-seed-bn skips it) the seed loop on the same weights exported
                with batch norm NOT folded into the convolutions, the graph TF Hub's Keras
                MobileNet V2 module has: what the seed notebook ran, at the same labels

Methods run round-robin (the order rotates each round) so a background load slows all
alike; each figure is the best round (the least disturbed), medians are in the JSON.
Ratios are also given per CPU second (CPU time of all threads per image, the least of the
rounds): on a shared or throttled machine (this VM at times caps a process near one core)
wall-clock figures swing 2x between rounds while CPU time per image barely moves; with
the cores to itself a method's wall-clock ratio tends to its CPU ratio.

Memory: peak RSS (VmHWM/VmRSS of a CLI subprocess, sampled every 50 ms) of `imnet64 label`:
  A  1 000 files, one shard          (enumerates 1 000, labels 1 000)
  B 20 000 files, shard 0 of 20      (enumerates 20 000, labels 1 000)
B - A is what 19 000 more files cost (the sorted name list, ~100 bytes per file). Within
each run the peak RSS per quarter of its images shows that nothing accumulates per image:
it ramps up during the first few hundred images (the teacher's working memory, tf.data
buffers) and then stays flat. Labeling all 20 000 files in one run would take minutes here;
B labels as many as A so the run stays short while the enumeration, sorting and sharding of
20 000 files is real. The 20 000 files are hard links to the 1 000 photos (same bytes,
distinct names).

  .venv/bin/python bench/label.py [--images 384] [--rounds 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)

REPO = Path(__file__).resolve().parents[1]


def _vm_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of `pid` in MB: current and peak resident memory of that process."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    values[line[:5]] = int(line.split()[1]) / 1024
    except OSError:
        return None
    return (values["VmRSS"], values["VmHWM"]) if len(values) == 2 else None


def _rss_profile(cmd: list[str], env: dict[str, str]) -> dict:
    """Run `cmd`, sampling /proc every 50 ms: its peak RSS overall (VmHWM) and while
    labeling (VmRSS from the line `teacher: ...`, printed once the teacher is loaded).

    Not getrusage/wait4: Linux carries the parent's high-water mark across fork+exec into
    the child's ru_maxrss, so this (large) bench process would be measured instead.
    """
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    labeling = threading.Event()
    fraction = [0.0]  # of this shard labeled, from the progress lines

    def read_stderr() -> None:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("teacher: "):
                labeling.set()
            m = re.match(r"label \d+/\d+: (\d+)/(\d+) images", line)
            if m and int(m.group(2)):
                fraction[0] = int(m.group(1)) / int(m.group(2))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    peak, during = 0.0, 0.0
    quarters = [0.0] * 4  # peak RSS while labeling each quarter of the shard's images
    while proc.poll() is None:
        sample = _vm_mb(proc.pid)
        if sample:
            rss, hwm = sample
            peak = max(peak, hwm)
            if labeling.is_set():
                during = max(during, rss)
                q = min(3, int(fraction[0] * 4))
                quarters[q] = max(quarters[q], rss)
        time.sleep(0.05)
    reader.join(10)
    return {"peak_rss_mb": round(peak, 1), "peak_rss_labeling_mb": round(during, 1),
            "peak_rss_by_quarter_mb": [round(q, 1) for q in quarters],
            "exit_code": proc.returncode, "stderr_tail": "".join(lines[-3:])}


def _memory_runs(work: Path, files_small: int, files_large: int, labeled: int,
                 batch_size: int) -> dict:
    from imnet64.pipeline.sample_images import write_sample

    small, large = work / f"mem{files_small}", work / f"mem{files_large}"
    sources = write_sample(small, files_small, per_folder=1000)
    for i in range(files_large):
        link = large / f"{i // 1000:03d}" / f"img_{i:06d}.png"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.link(sources[i % len(sources)], link)
    exe = str(Path(sys.executable).with_name("imnet64"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    runs = {
        "A": (small, 1, f"{files_small} files, one shard"),
        "B": (large, max(1, files_large // labeled), f"{files_large} files, shard 0 of "
              f"{max(1, files_large // labeled)}"),
    }
    out = {}
    for key, (folder, shards, what) in runs.items():
        target = work / f"out-mem-{key}"
        shutil.rmtree(target, ignore_errors=True)
        cmd = [exe, "label", str(folder), str(target), "--teacher", "offline",
               "--num-shards", str(shards), "--shard-index", "0",
               "--batch-size", str(batch_size), "--progress-every", "0"]
        start = time.perf_counter()
        profile = _rss_profile(cmd, env)
        wall = time.perf_counter() - start
        if profile["exit_code"] != 0:
            raise SystemExit(f"memory run {key} failed: {profile['stderr_tail']}")
        from imnet64.formats.label_parts import part_paths, read_summary

        summary = read_summary(part_paths(target, 0, shards).summary)
        out[key] = {"what": what, **{k: v for k, v in profile.items() if "rss" in k},
                    "files": summary["total_inputs"], "labeled": summary["labeled"],
                    "images_per_second": summary["images_per_second"],
                    "process_seconds": round(wall, 1)}
    return out


def _seed_loop(tf, hub_model, class_names, folder: Path, batch_size: int) -> dict[str, str]:
    """The notebook's labeling cell on `folder` (a copy); returns {file name: class}."""
    import numpy as np

    file_names = sorted(str(p) for p in folder.rglob("*.png"))
    imagenet_labels = np.array(class_names)

    def decode_image(path):
        img = tf.io.read_file(path)
        img = tf.image.decode_png(img, channels=3)
        img = tf.image.convert_image_dtype(img, tf.float32)
        img = tf.image.resize(img, (224, 224))
        return img

    filename_dataset = tf.data.Dataset.from_tensor_slices(file_names)
    inference_data = filename_dataset.map(decode_image, num_parallel_calls=tf.data.AUTOTUNE)
    inference_data = tf.data.Dataset.zip((filename_dataset, inference_data))
    inference_data = inference_data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    moved = {}
    for files, x in inference_data:
        pred = hub_model.predict(x, verbose=0)
        classes = imagenet_labels[np.argmax(pred, axis=-1)]
        for i, file in enumerate(files):
            f = Path(file.numpy().decode("ascii"))
            if not os.path.exists(f.parent / classes[i]):
                os.mkdir(f.parent / classes[i])
            os.rename(f, f.parent / classes[i] / f.parts[-1])
            moved[f.relative_to(folder).as_posix()] = str(classes[i])
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--memory-files", default="1000,20000",
                        help="small,large file counts for the peak-RSS runs")
    parser.add_argument("--memory-labeled", type=int, default=1000,
                        help="images labeled by runs A and B")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--no-seed-bn", action="store_true",
                        help="skip the seed loop on the unfolded-batch-norm export")
    parser.add_argument("--workdir", type=Path, help="default: a fresh temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    os.environ.setdefault("IMNET64_HOME", str(REPO / ".cache" / "imnet64"))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-label."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = _run(args, work)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        from imnet64.atomic import write_json

        write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


def _run(args, work: Path) -> dict:
    from imnet64.formats.label_parts import part_paths
    from imnet64.label.image_decode import decode_image
    from imnet64.label.inputs import open_inputs
    from imnet64.label.options import LabelOptions
    from imnet64.label.run import label_shard, plan_shard
    from imnet64.pipeline.sample_images import write_sample
    from imnet64.teacher import load_teacher

    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub

    batch = args.batch_size
    images = work / "images"
    write_sample(images, args.images, per_folder=1000)
    from imnet64.cluster.machine import machine_line

    teacher = load_teacher("offline")
    print(f"machine: {machine_line()}")
    print(f"{args.images} real 64x64 photos, teacher {teacher.name} ({teacher.path}), "
          f"batch {batch}, {args.rounds} rounds, TF {tf.__version__}, {os.cpu_count()} CPUs")

    # teacher alone: preloaded, already resized, exactly what the label pipeline feeds it
    inputs = open_inputs(images)
    pixels = np.stack([decode_image(inputs.read(i)).image for i in range(len(inputs))])
    preloaded = [
        tf.image.resize(tf.image.convert_image_dtype(pixels[i:i + batch], tf.float32),
                        teacher.image_size)
        for i in range(0, len(pixels), batch)
    ]
    # the seed's model: hub.KerasLayer of the same SavedModel in a Sequential
    seed_model = tf.keras.Sequential([
        hub.KerasLayer(str(teacher.path), input_shape=(*teacher.image_size, 3))
    ])
    class_names = list(teacher.class_names)
    seed_bn_model = None
    if not args.no_seed_bn:
        from imnet64.teacher.export import export_hub_style_saved_model
        from imnet64.teacher.mobilenet_v2 import build_mobilenet_v2
        from imnet64.teacher.offline import default_weights_path, read_verified_weights

        unfolded = build_mobilenet_v2(read_verified_weights(default_weights_path()),
                                      fold_batchnorm=False)
        export_hub_style_saved_model(unfolded, work / "teacher-bn")
        seed_bn_model = tf.keras.Sequential([
            hub.KerasLayer(str(work / "teacher-bn"), input_shape=(*teacher.image_size, 3))
        ])

    def run_teacher_alone(r: int) -> None:
        for x in preloaded:
            teacher.logits(x).numpy()

    label_outputs: dict[int, Path] = {}

    def run_label(r: int) -> None:
        out = work / f"out-label-{r}"
        plan = plan_shard(images, out, 0, 1)
        label_shard(plan, teacher, LabelOptions(batch_size=batch))
        plan.inputs.close()
        label_outputs[r] = out

    seed_results: dict[int, dict[str, str]] = {}
    seed_copies: dict[int, Path] = {}

    def prepare_seed(r: int) -> None:
        for name in ("seed-copy", "seed-bn-copy"):
            copy = work / f"{name}-{r}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(images, copy)
        seed_copies[r] = work / f"seed-copy-{r}"

    def run_seed(r: int) -> None:
        seed_results[r] = _seed_loop(tf, seed_model, class_names, seed_copies[r], batch)

    seed_bn_results: dict[int, dict[str, str]] = {}

    def run_seed_bn(r: int) -> None:
        copy = work / f"seed-bn-copy-{r}"
        seed_bn_results[r] = _seed_loop(tf, seed_bn_model, class_names, copy, batch)

    # warm-up: trace every graph once (not timed)
    run_teacher_alone(-1)
    warm = work / "warm"
    write_sample(warm, 2 * batch, per_folder=1000)
    label_shard(plan_shard(warm, work / "out-warm", 0, 1), teacher,
                LabelOptions(batch_size=batch))
    shutil.copytree(warm, work / "warm-seed")
    _seed_loop(tf, seed_model, class_names, work / "warm-seed", batch)
    methods = {"teacher_alone": run_teacher_alone, "label": run_label, "seed_loop": run_seed}
    if seed_bn_model is not None:
        shutil.copytree(warm, work / "warm-seed-bn")
        _seed_loop(tf, seed_bn_model, class_names, work / "warm-seed-bn", batch)
        methods["seed_loop_bn"] = run_seed_bn

    wall: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    names = list(methods)
    for r in range(args.rounds):
        prepare_seed(r)
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            methods[name](r)
            wall[name].append(args.images / (time.perf_counter() - start))
            cpu[name].append(1000 * (time.process_time() - cpu_start) / args.images)
            print(f"  round {r} {name:14s} {wall[name][-1]:7.1f} images/s  "
                  f"{cpu[name][-1]:6.1f} CPU ms/image", flush=True)

    best = {m: max(v) for m, v in wall.items()}
    median = {m: statistics.median(v) for m, v in wall.items()}
    cpu_ms = {m: min(v) for m, v in cpu.items()}
    # same labels? the label run's CSV vs the classes the seed loop moved files into
    import csv

    with open(part_paths(label_outputs[0], 0, 1).csv, encoding="utf-8") as f:
        ours = {row["path"]: row["class_name"] for row in csv.DictReader(f)}
    theirs = seed_results[0]
    agree = sum(ours[k] == theirs.get(k) for k in ours)
    # the seed moved the files of its copy; the originals are untouched by `label`
    untouched = sum(1 for _ in images.rglob("*.png")) == args.images

    print()
    print(f"{'method':16s}{'images/s (best)':>16s}{'median':>9s}{'CPU ms/image':>14s}")
    for m in names:
        print(f"{m:16s}{best[m]:16.1f}{median[m]:9.1f}{cpu_ms[m]:14.1f}")
    vs_seed = best["label"] / best["seed_loop"]
    vs_teacher = best["label"] / best["teacher_alone"]
    cpu_vs_seed = cpu_ms["seed_loop"] / cpu_ms["label"]
    cpu_vs_teacher = cpu_ms["teacher_alone"] / cpu_ms["label"]
    print(f"label / seed loop     = {vs_seed:.2f}x wall (best), {cpu_vs_seed:.2f}x per CPU "
          f"second   (goal >= 2.0)")
    print(f"label / teacher alone = {vs_teacher:.2f}x wall (best), {cpu_vs_teacher:.2f}x per CPU "
          f"second   (goal >= 0.9)")
    print(f"same top-1 class as the seed loop: {agree}/{len(ours)}; "
          f"label left its {args.images} inputs in place: {untouched}")
    if "seed_loop_bn" in best:
        agree_bn = sum(ours[k] == seed_bn_results[0].get(k) for k in ours)
        vs_seed_bn = best["label"] / best["seed_loop_bn"]
        cpu_vs_seed_bn = cpu_ms["seed_loop_bn"] / cpu_ms["label"]
        print(f"label / seed loop with unfolded batch norm = {vs_seed_bn:.2f}x wall (best), "
              f"{cpu_vs_seed_bn:.2f}x per CPU second (same top-1: {agree_bn}/{len(ours)})")
    results = {
        "images": args.images,
        "batch_size": batch,
        "rounds": args.rounds,
        "teacher": teacher.name,
        "tensorflow": tf.__version__,
        "cpus": os.cpu_count(),
        "machine": machine_line(),
        "images_per_second": {"best": best, "median": median},
        "cpu_ms_per_image": cpu_ms,
        "label_vs_seed_loop": round(vs_seed, 3),
        "label_vs_teacher_alone": round(vs_teacher, 3),
        "label_vs_seed_loop_per_cpu_second": round(cpu_vs_seed, 3),
        "label_vs_teacher_alone_per_cpu_second": round(cpu_vs_teacher, 3),
        "top1_agreement_with_seed_loop": [agree, len(ours)],
    }
    if "seed_loop_bn" in best:
        results["label_vs_seed_loop_unfolded_bn"] = round(vs_seed_bn, 3)
        results["label_vs_seed_loop_unfolded_bn_per_cpu_second"] = round(cpu_vs_seed_bn, 3)
        results["top1_agreement_with_seed_loop_unfolded_bn"] = [agree_bn, len(ours)]

    if not args.skip_memory:
        small, large = (int(v) for v in args.memory_files.split(","))
        print()
        print("peak RSS of `imnet64 label` (separate processes, offline teacher):")
        memory = _memory_runs(work, small, large, args.memory_labeled, batch)
        print("  (whole run = VmHWM, whose peak comes from loading + freezing the teacher; "
              "labeling = VmRSS sampled once the teacher is loaded)")
        for key, m in memory.items():
            print(f"  {key}: {m['what']:30s} labeled {m['labeled']:6d}  peak RSS whole run "
                  f"{m['peak_rss_mb']:7.1f} MB, labeling {m['peak_rss_labeling_mb']:7.1f} MB  "
                  f"({m['images_per_second']} images/s, {m['process_seconds']} s with start-up)")
        for key, m in memory.items():
            quarters = " | ".join(f"{q:.0f}" for q in m["peak_rss_by_quarter_mb"])
            print(f"  {key}: peak RSS (MB) while labeling each quarter of its images: "
                  f"{quarters}")
        a, b = (memory[k]["peak_rss_labeling_mb"] for k in "AB")
        print(f"  labeling: B - A = {b - a:+.1f} MB for {large - small} more files enumerated "
              f"(same number labeled)")
        results["memory"] = memory
    return results


if __name__ == "__main__":
    sys.exit(main())
