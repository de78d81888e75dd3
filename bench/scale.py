"""Scale: every stage of the pipeline at N images, and how its cost per image grows with N.

For each N of --sizes it synthesizes N images (bench/scale_inputs.py: crops of the package
photos at random scales with flips, colour shifts and noise; the mean PNG size is reported),
in each --layout, and runs what a user runs, each stage a fresh process of the real CLI:

  label           `imnet64 label` as 4 array-task shards (--shard-index i --num-shards 4,
                  one after another); figures are the 4 tasks summed (wall, CPU), the
                  largest of them (peak RSS, start-up)
  shard-records   `imnet64 shard-records` keeping every class the teacher found
  train-<engine>  `imnet64 train --epochs 1` with each of --engines (1 rank); a whole epoch
                  unless --train-steps or --train-fraction caps it (then its images are
                  steps x batch; with a fraction, training and the epoch-end validation
                  both grow with N, and the 1.28 M epoch is built from the steps' own
                  images/s, the start-up and evaluate's cost per image)
  evaluate        `imnet64 evaluate` of the first engine's run (val split)
  input-pipeline  the records input pipeline alone over the whole train split
                  (bench/scale_pipeline.py: training's options without repeat)

Per stage and N: wall seconds, images/s, CPU seconds per image (user + system of the
process and its children, from /usr/bin/time), peak RSS (the largest of the process and its
children: ru_maxrss as /usr/bin/time reports it; /usr/bin/time is a small process, so the
fork+exec carry-over of a parent's high-water mark is its own few MB, not this bench's),
time to the first image or step (when the stage's first progress line with work done
appears: label `label i/4: k/..`, shard-records `shard-records: k/..`, train
`epoch 1/1 step s/..` — step 1 includes tracing and is not logged — and the pipeline's
`first batch`; progress every 0.2 s), bytes on disk per image and files written; then the
ratio of each to the same stage at the smallest N. Every N is reported; nothing is a best-of.
The machine line comes first. Other processes on the machine slow wall figures (say so when
quoting them); CPU seconds per image are the figure to read for scaling.

--teacher: `offline` (default; the real offline MobileNet V2, 300-500 images/s here) or
`tiny` (a SavedModel this bench makes with the teacher's interface, [N,224,224,3] in [0,1]
-> 1001 logits: an 8x8 average pool, layer norm and a random dense layer, so its argmax
spreads over most of the 1000 classes like the real teacher on ImageNet). With `tiny`,
every figure but label's own images/s and CPU per image is representative: the outputs
have the same shapes, sizes and class counts.

The official batch-file layout (--layout batch-files) is generated here; labeling it needs
the batch-file reader of `imnet64 label` (the ImageNet64 issue). Until that is in, its
label stage fails and the bench says so and skips the layout's later stages.

    .venv/bin/python bench/scale.py [--sizes 10000,40000,160000] [--full]
        [--layout png-tar|batch-files|both] [--teacher offline|tiny] [--engines horovod,tf]
        [--train-steps S | --train-fraction F] [--work DIR] [--keep] [--json out.json]
    .venv/bin/python bench/scale.py --report out.json [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from imnet64.cluster.machine import machine_line

import scale_inputs

REPO = Path(__file__).resolve().parents[1]
BATCH = 32  # train's default batch size
FULL = 1_281_167
LABEL_TASKS = 4
PROGRESS = "0.2"  # seconds between progress lines: the time to the first image within that
STAGES = ("label", "shard-records", "train", "evaluate", "input-pipeline")
FIRST_WORK = {  # the first progress line of a stage that says work was done
    "label": re.compile(r"label \d+/\d+: [1-9]\d*/"),
    "shard-records": re.compile(r"shard-records: [1-9]\d*/"),
    "train": re.compile(r"epoch \d+/\d+ step \d+/"),
    "input-pipeline": re.compile(r"first batch after"),
}


def cli(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("imnet64")), *args]


def run_timed(cmd: list[str], first: re.Pattern | None, log: Path) -> dict:
    """Run `cmd` under /usr/bin/time; its wall, CPU, peak RSS and time to the first line
    matching `first` (from process start). Output goes to `log`; stdout is returned too."""
    load_before = os.getloadavg()[0]
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf_:
        start = time.monotonic()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf_.name, *cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=ENV, cwd=log.parent)
        first_at: list[float] = []
        lines: list[str] = []

        def watch() -> None:
            for line in proc.stderr:
                lines.append(line)
                if first is not None and not first_at and first.search(line):
                    first_at.append(time.monotonic() - start)

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        out = proc.stdout.read()
        proc.wait()
        reader.join(30)
        log.write_text("".join(lines) + out)
        fields = Path(tf_.name).read_text().split()
    wall, user, system, rss_kb = (float(v) for v in fields[-4:])
    return {"exit_code": proc.returncode, "wall_s": wall, "cpu_s": round(user + system, 2),
            "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "peak_rss_mb": round(rss_kb / 1024, 1),
            "first_s": round(first_at[0], 2) if first_at else None,
            "stdout": out, "error": next((ln.strip() for ln in reversed(lines)
                                           if ln.startswith("error:")), None)}


def tar_index_cost(tar: Path) -> dict:
    """CPU microseconds per member of label's tar index (what every array task builds over
    the whole archive), by tar_headers' lean scan and by tarfile alone, in this process."""
    from unittest import mock

    from imnet64.label import inputs, tar_headers

    def cost(lean: bool) -> float:
        start = time.process_time()
        if lean:
            found = len(inputs.open_inputs(tar))
        else:
            with mock.patch.object(tar_headers, "plain_members",
                                   side_effect=tar_headers.Unusual("tarfile only")):
                found = len(inputs.open_inputs(tar))
        return round((time.process_time() - start) / found * 1e6, 1)

    return {"tarfile_us_per_member": cost(False), "lean_us_per_member": cost(True)}


def tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under `path` (a file counts itself)."""
    if path.is_file():
        return path.stat().st_size, 1
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def figures(runs: list[dict], images: int, written: Path | None) -> dict:
    """A stage's figures from its process runs (several for label's array tasks)."""
    wall = sum(r["wall_s"] for r in runs)
    cpu = sum(r["cpu_s"] for r in runs)
    firsts = [r["first_s"] for r in runs if r["first_s"] is not None]
    size, files = tree_size(written) if written is not None and written.exists() else (0, 0)
    return {"images": images, "wall_s": round(wall, 2),
            "images_per_s": round(images / wall, 1) if wall else None,
            "cpu_s_per_image": round(cpu / images, 6) if images else None,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "peak_rss_mb_each": [r["peak_rss_mb"] for r in runs],
            "first_s": max(firsts) if firsts else None,
            "disk_bytes_per_image": round(size / images, 1) if images else None,
            "files_written": files,
            # the machine's 1-minute load average before and after each process: wall
            # figures taken at a load above the 2 cores are other people's time too
            "load_1min": [r["load_1min"] for r in runs]}


class StageFailed(Exception):
    pass


def check(run: dict, what: str) -> dict:
    if run["exit_code"] != 0:
        raise StageFailed(f"{what}: exit {run['exit_code']}: {run['error'] or 'see its log'}")
    return run


def run_size(work: Path, layout: str, n: int, args: argparse.Namespace) -> dict:
    """Every stage at N images in `layout`: {stage: figures} plus the counts checked."""
    inputs, made = scale_inputs.make_inputs(work, layout, n, args.seed)
    out = work / f"{layout}-{n}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    result: dict = {"inputs": made, "stages": {}}
    if layout == "png-tar":
        result["tar_index"] = tar_index_cost(inputs)
    stages = result["stages"]
    try:
        labels = out / "labeled"
        runs = [check(run_timed(cli("label", str(inputs), str(labels), "--teacher", TEACHER,
                                    "--num-shards", str(LABEL_TASKS), "--shard-index", str(i),
                                    "--progress-every", PROGRESS),
                                FIRST_WORK["label"], out / f"label-{i}.log"),
                      f"label task {i}")
                for i in range(LABEL_TASKS)]
        summaries = [json.loads(p.read_text()) for p in sorted(labels.glob("labels/*[0-9].json"))]
        labeled = sum(s["labeled"] for s in summaries)
        counted = sum(s["inputs"] for s in summaries)
        result["counts"] = {"inputs": n, "label_inputs": counted, "labeled": labeled,
                            "rejected": sum(s["rejected"] for s in summaries)}
        stages["label"] = figures(runs, n, labels)

        dataset = out / "dataset"
        run = check(run_timed(cli("shard-records", str(labels), str(dataset),
                                  "--progress-every", PROGRESS),
                              FIRST_WORK["shard-records"], out / "shard-records.log"),
                    "shard-records")
        manifest = json.loads((dataset / "dataset.json").read_text())
        splits = {k: v["count"] for k, v in manifest["splits"].items()}
        result["counts"].update(splits=splits, classes=len(manifest["classes"]))
        stages["shard-records"] = figures([run], labeled, dataset)

        first_run = None
        for engine in args.engines:
            run_dir = out / f"run-{engine}"
            n_steps = _train_steps(splits["train"], args)
            steps = ["--steps-per-epoch", str(n_steps)] if n_steps else []
            run = check(run_timed(cli("train", str(dataset), str(run_dir), "--epochs", "1",
                                      "--warmup-epochs", "0", "--engine", engine,
                                      "--log-every", PROGRESS, *steps),
                                  FIRST_WORK["train"], out / f"train-{engine}.log"),
                        f"train --engine {engine}")
            history = json.loads((run_dir / "history.json").read_text())["epochs"]
            trained = n_steps * BATCH if n_steps else splits["train"] // BATCH * BATCH
            stages[f"train-{engine}"] = figures([run], trained, run_dir)
            # the training steps' own rate (the log's images/s: no start-up, no validation),
            # from which projection() builds a whole epoch at 1.28 M
            stages[f"train-{engine}"]["steps_images_per_s"] = history[-1]["images_per_s"]
            stages[f"train-{engine}"]["val_images"] = splits["val"]
            first_run = first_run or run_dir

        before = {p.name for p in first_run.iterdir()}
        run = check(run_timed(cli("evaluate", str(first_run)), None, out / "evaluate.log"),
                    "evaluate")
        new = [first_run / name for name in {p.name for p in first_run.iterdir()} - before]
        stages["evaluate"] = figures([run], splits["val"], new[0] if len(new) == 1 else None)

        run = check(run_timed([sys.executable, str(REPO / "bench" / "scale_pipeline.py"),
                               str(dataset)], FIRST_WORK["input-pipeline"],
                              out / "input-pipeline.log"), "input pipeline")
        seen = json.loads(run["stdout"].strip().splitlines()[-1])["images"]
        result["counts"]["pipeline_images"] = seen
        stages["input-pipeline"] = figures([run], seen, None)
    except StageFailed as e:
        result["failed"] = str(e)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def _train_steps(train_count: int, args: argparse.Namespace) -> int:
    """Steps of train's one epoch: --train-steps, or --train-fraction of the train split
    (then training images and the epoch-end validation both grow with N, in the same
    proportion at every N), else 0 = the whole epoch."""
    if args.train_steps:
        return args.train_steps
    if args.train_fraction:
        return max(1, math.ceil(args.train_fraction * train_count / BATCH))
    return 0


def count_problems(result: dict) -> list[str]:
    """The counts that do not add up: inputs = labeled + rejected, train + val = labeled
    (no filters), the pipeline saw the whole train split."""
    c = result.get("counts", {})
    problems = []
    if c and c["label_inputs"] != c["inputs"]:
        problems.append(f"label saw {c['label_inputs']} inputs of {c['inputs']}")
    if c and c["labeled"] + c["rejected"] != c["inputs"]:
        problems.append(f"labeled {c['labeled']} + rejected {c['rejected']} != {c['inputs']}")
    if "splits" in c and sum(c["splits"].values()) != c["labeled"]:
        problems.append(f"train + val {sum(c['splits'].values())} != labeled {c['labeled']}")
    if "pipeline_images" in c and c["pipeline_images"] != c["splits"]["train"]:
        problems.append(f"pipeline read {c['pipeline_images']} != train {c['splits']['train']}")
    return problems


RATIO_KEYS = ("cpu_s_per_image", "peak_rss_mb", "first_s", "disk_bytes_per_image",
              "files_written", "wall_per_image")


def add_ratios(by_size: dict[int, dict]) -> None:
    """Each stage's figures / the same stage's at the smallest N that has it."""
    sizes = sorted(by_size)
    for stage in {s for r in by_size.values() for s in r.get("stages", {})}:
        have = [n for n in sizes if stage in by_size[n].get("stages", {})]
        if not have:
            continue
        for n in have:
            f = by_size[n]["stages"][stage]
            f["wall_per_image"] = round(f["wall_s"] / f["images"], 6) if f["images"] else None
        base = by_size[have[0]]["stages"][stage]
        for prev, n in zip(have, have[1:]):
            # CPU per added image between two sizes: the per-image cost without the fixed
            # part (process start-up, TensorFlow's import), which the plain CPU per image of
            # a small N carries; flat cost = the same marginal figure at every step of N
            a, f = by_size[prev]["stages"][stage], by_size[n]["stages"][stage]
            added = f["images"] - a["images"]
            f["marginal_cpu_ms_per_image"] = round(
                1000 * (f["cpu_s_per_image"] * f["images"] - a["cpu_s_per_image"] * a["images"])
                / added, 4) if added > 0 else None
        for n in have:
            f = by_size[n]["stages"][stage]
            # the goal allows RSS to grow by a stated number of bytes per image beyond 1.10x:
            # this is the growth per image added to the input (N), against the smallest N
            f["rss_growth_bytes_per_image"] = (
                round((f["peak_rss_mb"] - base["peak_rss_mb"]) * 2**20 / (n - have[0]), 1)
                if n > have[0] else None)
            f["ratio_to_smallest"] = {
                k: round(f[k] / base[k], 3) for k in RATIO_KEYS
                if isinstance(f.get(k), (int, float)) and isinstance(base.get(k), (int, float))
                and base[k]}


def projection(by_size: dict[int, dict], target: int, capped: bool) -> dict[str, float]:
    """Each stage's wall seconds at `target` images, from the line wall = fixed + per-image x
    images through its two largest sizes (one size: its time to the first image or step is
    taken as the fixed part). A stage whose first-image time is not measured (evaluate) or
    whose start-up grows with N is projected right this way, which scaling one size's wall
    is not. Train: one whole epoch (train split) on 1 rank, from its steps' own images/s
    where the run kept it; else left out when `capped` by --train-steps, whose figures are
    steps x batch whatever N is."""
    sizes = sorted(n for n in by_size if by_size[n].get("stages"))
    largest = sizes[-1]
    out = {}
    for stage, f in by_size[largest]["stages"].items():
        if stage.startswith("train-") and f.get("steps_images_per_s"):
            out[stage] = _train_epoch_at(by_size, stage, target)
            continue
        if stage.startswith("train-") and capped:
            continue
        images = _stage_images_at(by_size[largest], stage, target, largest)
        have = [n for n in sizes if stage in by_size[n]["stages"]]
        per_image = 0.0
        if len(have) >= 2:
            a, b = (by_size[n]["stages"][stage] for n in have[-2:])
            per_image = (b["wall_s"] - a["wall_s"]) / max(b["images"] - a["images"], 1)
            fixed = min(max(b["wall_s"] - per_image * b["images"], 0.0), b["wall_s"])
        if per_image <= 0:  # one size, or noise (a loaded machine) made the line fall
            tasks = LABEL_TASKS if stage == "label" else 1
            fixed = min((f["first_s"] or 0.0) * tasks, f["wall_s"])
            per_image = (f["wall_s"] - fixed) / f["images"]
        out[stage] = round(fixed + per_image * images, 0)
    return out


def _train_epoch_at(by_size: dict[int, dict], stage: str, target: int) -> float:
    """One whole epoch of `stage` at `target` images: its start-up (time to the first step)
    at the largest N, the train split at the steps' own images/s, and the validation at the
    end at evaluate's cost per added image (its line through the two largest sizes)."""
    largest = max(n for n in by_size if stage in by_size[n].get("stages", {}))
    result = by_size[largest]
    f = result["stages"][stage]
    splits = result["counts"]["splits"]
    train = splits["train"] * target / largest
    val = splits["val"] * target / largest
    have = [n for n in sorted(by_size) if "evaluate" in by_size[n].get("stages", {})]
    per_val = 0.0
    if len(have) >= 2:
        a, b = (by_size[n]["stages"]["evaluate"] for n in have[-2:])
        per_val = max((b["wall_s"] - a["wall_s"]) / max(b["images"] - a["images"], 1), 0.0)
    return round((f["first_s"] or 0.0) + train / f["steps_images_per_s"] + val * per_val, 0)


def _stage_images_at(result: dict, stage: str, target: int, n: int) -> float:
    """The images `stage` handles when the input has `target` images instead of `n`: label
    and shard-records all of them; train and the input pipeline the train split; evaluate
    the val split (both in the same proportions as at `n`)."""
    splits = result.get("counts", {}).get("splits")
    if stage in ("label", "shard-records") or not splits:
        return target
    part = splits["val"] if stage == "evaluate" else splits["train"]
    return part * target / n


def table(layout: str, by_size: dict[int, dict]) -> list[str]:
    head = (f"{'stage':<16}{'N':>9}{'images':>9}{'wall s':>9}{'img/s':>9}{'CPU ms/img':>11}"
            f"{'RSS MB':>8}{'first s':>8}{'B/img':>9}{'files':>7}{'load':>6}   x smallest N: "
            "CPU/img RSS first B/img files; RSS growth B/img")
    lines = [f"layout {layout}", head]
    for stage in stage_order(by_size):
        for n in sorted(by_size):
            f = by_size[n].get("stages", {}).get(stage)
            if f is None:
                continue
            r = f.get("ratio_to_smallest", {})
            lines.append(
                f"{stage:<16}{n:>9}{f['images']:>9}{f['wall_s']:>9.1f}"
                f"{f['images_per_s'] or 0:>9.1f}{1000 * (f['cpu_s_per_image'] or 0):>11.2f}"
                f"{f['peak_rss_mb']:>8.0f}{_num(f['first_s']):>8}"
                f"{_num(f['disk_bytes_per_image']):>9}{f['files_written']:>7}"
                f"{_num(_peak_load(f)):>6}   "
                + " ".join(_num(r.get(k)) for k in ("cpu_s_per_image", "peak_rss_mb",
                                                     "first_s", "disk_bytes_per_image",
                                                     "files_written"))
                + f"; {_num(f.get('rss_growth_bytes_per_image'))}")
    for n in sorted(by_size):
        r = by_size[n]
        if "tar_index" in r:
            lines.append(f"N={n}: label's tar index, CPU us per member: tarfile "
                         f"{r['tar_index']['tarfile_us_per_member']}, lean scan "
                         f"{r['tar_index']['lean_us_per_member']}")
        lines.append(f"N={n}: mean PNG {r['inputs']['mean_png_bytes']:.0f} B; counts "
                     f"{json.dumps(r.get('counts', {}))}"
                     + (f"; FAILED: {r['failed']}" if "failed" in r else "")
                     + "".join(f"; COUNTS WRONG: {p}" for p in count_problems(r)))
    return lines


def _peak_load(f: dict) -> float | None:
    """The highest 1-minute load average seen around a stage's processes (None: not kept)."""
    loads = [v for pair in f.get("load_1min", []) for v in pair]
    return max(loads) if loads else None


def stage_order(by_size: dict[int, dict]) -> list[str]:
    seen = {s for r in by_size.values() for s in r.get("stages", {})}
    order = ["label", "shard-records", *sorted(s for s in seen if s.startswith("train-")),
             "evaluate", "input-pipeline"]
    return [s for s in order if s in seen]


def _num(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) and abs(v) < 1000 else f"{v:,.0f}" if \
        isinstance(v, float) else str(v)


def report(results: dict, markdown: bool = False) -> int:
    """The tables and 1.28 M projection of a saved run (ratios and projection recomputed)."""
    print(f"machine: {results['machine']}\nteacher: {results['teacher']}; engines "
          f"{', '.join(results['engines'])}; train steps {results['train_steps'] or 'epoch'}")
    for layout, lay in results["layouts"].items():
        by_size = {int(n): r for n, r in lay["sizes"].items()}
        add_ratios(by_size)
        ok = {n: r for n, r in by_size.items() if r.get("stages")}
        # a layout may carry its own --train-steps (runs folded together by hand)
        capped = bool(lay.get("train_steps", results["train_steps"]))
        projected = projection(ok, FULL, capped) if ok else {}
        print("\n".join(markdown_table(layout, by_size, projected) if markdown
                        else table(layout, by_size)))
        if projected and not markdown:
            print(f"projected wall at N={FULL:,}: " + ", ".join(
                f"{k} {v / 60:.1f} min" for k, v in projected.items()))
    return 0


def markdown_table(layout: str, by_size: dict[int, dict], projected: dict[str, float]
                   ) -> list[str]:
    """Per stage and N: the figures, the ratios to the smallest N, and the 1.28 M wall."""
    lines = [f"layout `{layout}`", "",
             "| stage | N | images/s | CPU ms/image | peak RSS MB | first image/step s "
             "| disk B/image | files | CPU/image vs smallest N | marginal CPU ms/image "
             "| RSS vs smallest N | RSS growth B/image | 1.28 M wall (projected) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for stage in stage_order(by_size):
        have = [n for n in sorted(by_size) if stage in by_size[n].get("stages", {})]
        for n in have:
            f = by_size[n]["stages"][stage]
            r = f.get("ratio_to_smallest", {})
            wall = projected.get(stage) if n == have[-1] else None
            lines.append(
                f"| {stage} | {n:,} | {f['images_per_s'] or 0:,.0f} "
                f"| {1000 * (f['cpu_s_per_image'] or 0):.2f} | {f['peak_rss_mb']:,.0f} "
                f"| {_num(f['first_s'])} | {_num(f['disk_bytes_per_image'])} "
                f"| {f['files_written']} | {_num(r.get('cpu_s_per_image'))} "
                f"| {_num(f.get('marginal_cpu_ms_per_image'))} "
                f"| {_num(r.get('peak_rss_mb'))} | {_num(f.get('rss_growth_bytes_per_image'))} "
                f"| {'' if wall is None else f'{wall / 60:.1f} min'} |")
    return lines


def make_tiny_teacher(work: Path) -> Path:
    """The tiny SavedModel teacher (see the module docstring), made once in `work`."""
    path = work / "tiny-teacher"
    if not (path / "saved_model.pb").exists():
        code = ("import sys, imnet64\n"
                "import tensorflow as tf\n"
                "from imnet64.teacher.export import export_hub_style_saved_model\n"
                "tf.keras.utils.set_random_seed(0)\n"
                "x = inputs = tf.keras.Input((224, 224, 3))\n"
                "x = tf.keras.layers.AveragePooling2D(8)(x)\n"
                "x = tf.keras.layers.Flatten()(x)\n"
                "x = tf.keras.layers.LayerNormalization(center=False, scale=False)(x)\n"
                "init = tf.keras.initializers.RandomNormal(stddev=0.1, seed=0)\n"
                "x = tf.keras.layers.Dense(1001, kernel_initializer=init)(x)\n"
                "export_hub_style_saved_model(tf.keras.Model(inputs, x), sys.argv[1])\n")
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=ENV)
    return path


ENV: dict[str, str] = {}
TEACHER = "offline"


def main() -> int:
    global TEACHER
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,40000,160000")
    parser.add_argument("--full", action="store_true",
                        help=f"also N = {FULL:,} (its expected time is printed first)")
    parser.add_argument("--layout", choices=[*scale_inputs.LAYOUTS, "both"], default="png-tar")
    parser.add_argument("--teacher", choices=["offline", "tiny"], default="offline")
    parser.add_argument("--engines", default="horovod,tf",
                        help="train engines, the first also evaluated")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="cap train's epoch at S steps (0: the whole train split)")
    parser.add_argument("--train-fraction", type=float, default=0.0,
                        help="cap train's epoch at this fraction of the train split (so the "
                             "work, validation included, grows with N; 0: --train-steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="folder for inputs and outputs [a temporary one]")
    parser.add_argument("--keep", action="store_true", help="keep each N's outputs")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--report", metavar="JSON",
                        help="print the tables and projection of a saved --json run; run nothing")
    parser.add_argument("--markdown", action="store_true",
                        help="with --report: one Markdown table per layout (for the README)")
    args = parser.parse_args()
    if args.report:
        return report(json.loads(Path(args.report).read_text()), args.markdown)
    if not 0.0 <= args.train_fraction <= 1.0:
        parser.error(f"--train-fraction must be in [0, 1], got {args.train_fraction}")
    if args.train_fraction and args.train_steps:
        parser.error("--train-steps and --train-fraction both cap train's epoch: give one")
    args.engines = [e for e in args.engines.split(",") if e]
    sizes = sorted(int(s) for s in args.sizes.split(","))
    layouts = scale_inputs.LAYOUTS if args.layout == "both" else (args.layout,)
    work = Path(args.work or tempfile.mkdtemp(prefix="imnet64-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    ENV.update({k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
               TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    print(f"machine: {machine_line()}", flush=True)
    TEACHER = "offline" if args.teacher == "offline" else str(make_tiny_teacher(work))
    print(f"teacher: {args.teacher} ({TEACHER}); label figures "
          + ("are the real teacher's" if args.teacher == "offline" else
             "(images/s, CPU per image) are NOT the real teacher's; the rest are"), flush=True)
    results: dict = {"machine": machine_line(), "teacher": args.teacher,
                     "engines": args.engines, "train_steps": args.train_steps,
                     "train_fraction": args.train_fraction,
                     "label_tasks": LABEL_TASKS, "layouts": {}}
    for layout in layouts:
        by_size: dict[int, dict] = {}
        for n in sizes:
            print(f"== {layout} N={n}", flush=True)
            started = time.monotonic()
            by_size[n] = run_size(work, layout, n, args)
            by_size[n]["seconds"] = round(time.monotonic() - started, 1)
            print(f"   {by_size[n]['seconds']} s"
                  + (f"; FAILED: {by_size[n]['failed']}" if "failed" in by_size[n] else ""),
                  flush=True)
            add_ratios(by_size)  # the table so far after every N: a long run killed keeps them
            print("\n".join(table(layout, by_size)), flush=True)
            results["layouts"][layout] = {"sizes": {str(k): r for k, r in by_size.items()}}
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
            if "failed" in by_size[n] and not by_size[n]["stages"]:
                print(f"   layout {layout}: its first stage failed; skipping its other sizes "
                      "(for batch-files: `imnet64 label` cannot read them yet)", flush=True)
                break
        if args.full and any(r.get("stages") for r in by_size.values()):
            add_ratios(by_size)
            expect = projection(by_size, FULL, bool(args.train_steps))
            print(f"== {layout} N={FULL:,}: expected {sum(expect.values()) / 3600:.1f} h "
                  f"({', '.join(f'{k} {v / 60:.0f} min' for k, v in expect.items())})",
                  flush=True)
            by_size[FULL] = run_size(work, layout, FULL, args)
        add_ratios(by_size)
        ok = {n: r for n, r in by_size.items() if r.get("stages")}
        results["layouts"][layout] = {
            "sizes": {str(n): r for n, r in by_size.items()},
            "projected_full_wall_s": projection(ok, FULL, bool(args.train_steps)) if ok else {}}
        if args.full:
            print("\n".join(table(layout, by_size)), flush=True)
        if ok:
            print(f"projected wall at N={FULL:,} (a line through the two largest N; "
                  "train: one whole epoch, 1 rank, unless --train-steps; label: "
                  f"{args.teacher} teacher, 4 tasks in a row): "
                  + ", ".join(f"{k} {v / 60:.1f} min" for k, v in
                              results["layouts"][layout]["projected_full_wall_s"].items()),
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    # batch-files failing at label is expected until `imnet64 label` reads them
    failed = [r for name, lay in results["layouts"].items() for r in lay["sizes"].values()
              if count_problems(r) or ("failed" in r and (name == "png-tar" or r["stages"]))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
