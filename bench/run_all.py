"""`make bench`: run every benchmark (each measures its ratios side by side in one run),
then merge their figures into bench/results.json and a markdown table bench/results.md.

Each benchmark is a script taking `--json PATH`; a failing one is recorded, not hidden.
Every figure comes with the machine line of imnet64.cluster.machine (CPU model and vector
extensions, cores, memory, oneDNN, TensorFlow). With `--only NAME...` the other benchmarks'
entries of an existing results.json are kept, each with the machine and date it was measured on.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from imnet64.cluster.machine import describe

HERE = Path(__file__).resolve().parent

BENCHES = {
    "label": ["bench/label.py"],
    "records": ["bench/records.py"],
    "train": ["bench/train.py"],
    "memory": ["bench/memory.py"],
    "onednn": ["bench/onednn.py"],
    "distill": ["bench/distill.py"],
    "engines": ["bench/engines.py"],
    "imagenet64_batch": ["bench/imagenet64_batch.py"],
    "precision": ["bench/precision.py"],
    "scale": ["bench/scale.py"],  # 10 k / 40 k / 160 k images: hours (bench/scale.py says)
}


# The figures each issue set a goal for: (benchmark, dotted key, what it is, goal or "").
HEADLINES = [
    ("label", "label_vs_seed_loop", "`imnet64 label` / seed loop (images/s)", ">= 2"),
    ("label", "label_vs_seed_loop_unfolded_bn",
     "`imnet64 label` / seed loop on the unfolded-BN teacher", ">= 2"),
    ("label", "label_vs_teacher_alone", "`imnet64 label` / teacher alone", ">= 0.9"),
    ("label", "label_vs_teacher_alone_per_cpu_second",
     "`imnet64 label` / teacher alone, per CPU second", ">= 0.9"),
    ("label", "memory.A.peak_rss_labeling_mb", "label peak RSS, 1k files (MB)", ""),
    ("label", "memory.B.peak_rss_labeling_mb", "label peak RSS, 20k files (MB)", "flat"),
    ("records", "speedup_png_vs_seed", "records pipeline, png shards / seed PNG pipeline", ">= 5"),
    ("records", "speedup_raw_vs_seed", "records pipeline, raw shards / seed PNG pipeline", ">= 5"),
    ("records", "speedup_io_only", "shard reads / one file open per image (I/O only)", ""),
    ("records", "pipeline_png_over_train_step",
     "png pipeline / what one training step consumes", ">> 1"),
    ("train", "pipeline_over_in_memory", "`imnet64 train` / in-memory feed (worst round)",
     ">= 0.9"),
    ("train", "two_ranks_slowest_over_median_epoch",
     "`train --np 2`: slowest / median epoch (worst round)", ">= 0.85"),
    ("train", "two_ranks_over_one", "`train --np 2` / 1 rank (2 shared cores)", ""),
    ("memory", "recompute_vs_not.plain.allocator_peak_ratio",
     "plain: step memory with / without `--recompute`", "< 1"),
    ("memory", "recompute_vs_not.plain.speed_ratio",
     "plain: images/s with / without recompute", ""),
    ("memory", "recompute_vs_not.residual.allocator_peak_ratio",
     "residual: step memory with / without `--recompute`", "< 1"),
    ("memory", "configs.plain.computed_activation_mib",
     "plain: activation memory computed in docs/gradients.md (MiB, batch 32)", ""),
    ("memory", "configs.plain.allocator_step_peak_mib", "plain: measured step peak (MiB)", ""),
    ("onednn", "on_over_off.label", "`imnet64 label`, oneDNN on / off (images/s)", ">= 1"),
    ("onednn", "on_over_off.train_step", "training step, oneDNN on / off (images/s)", ">= 1"),
    ("onednn", "cpu_off_over_on.label", "`imnet64 label`, CPU time per image off / on", ""),
    ("onednn", "cpu_off_over_on.train_step", "training step, CPU time per image off / on", ""),
    *((("distill", f"targets.{t}.heldout_agreement",
        f"`train --targets {t}`: held-out top-1 agreement with the teacher", ""),
       ("distill", f"targets.{t}.heldout_kl", f"`train --targets {t}`: held-out KL", ""),
       ("distill", f"targets.{t}.images_per_s", f"`train --targets {t}`: train images/s", ""))
      [i] for t in ("hard", "soft", "online") for i in range(3)),
    ("precision", "bf16_over_fp32.label_cpu_per_image_fp32_over_bf16",
     "`label --precision bf16` / fp32, per CPU second (median round)", ""),
    ("precision", "label.agreement_demo_images.top1_identical_pct",
     "`label --precision bf16`: top-1 identical to fp32 on the demo's images (%)", ""),
    ("precision", "bf16_over_fp32.train_images_per_s",
     "`train --precision bf16` / fp32 (images/s, median round)", ""),
    # the batch-files run: after the catalog fix, train capped at a fraction of an epoch
    # (so its validation grows with N too; the png-tar run's fixed steps did not)
    *((("scale", f"layouts.batch-files.sizes.160000.stages.{stage}.{key}",
        f"scale: {stage} {what}", goal))
      for stage in ("label", "shard-records", "train-horovod", "train-tf", "evaluate",
                    "input-pipeline")
      for key, what, goal in (("ratio_to_smallest.cpu_s_per_image",
                               "CPU s per image at 160 k / at 10 k", "<= 1.15"),
                              ("ratio_to_smallest.peak_rss_mb", "peak RSS at 160 k / at 10 k",
                               "<= 1.10 + bytes/image"),
                              ("rss_growth_bytes_per_image",
                               "RSS growth per input image, 10 k -> 160 k (bytes)", ""))),
    ("engines", "tf_over_horovod",
     "`train --np 2 --engine tf` / `--engine horovod` (images/s, median round)", ""),
    ("imagenet64_batch", "four_shards_equal_whole",
     "1.6 GB batch file: 4 shards' labels == one run's", "True"),
    ("imagenet64_batch", "whole.peak_rss_mb", "1.6 GB batch file, one rank: peak RSS (MB)", ""),
    *(("imagenet64_batch", f"four_shards.{i}.peak_rss_mb",
       f"1.6 GB batch file, shard {i}/4: peak RSS (MB)", "") for i in range(4)),
]


def headline_rows(results: dict) -> list[str]:
    """Markdown rows of HEADLINES present in `results` (absent ones are skipped)."""
    rows = []
    for bench, key, what, goal in HEADLINES:
        figures = dict(flatten(results["benchmarks"].get(bench, {}).get("figures", {})))
        if key in figures:
            rows.append(f"| {what} | {fmt(figures[key])} | {goal} |")
    return rows


def machine() -> dict:
    """imnet64.cluster.machine's description (CPU model and vector extensions, cores, memory,
    oneDNN as the benchmarks get it, TensorFlow) plus Python and the OS."""
    return {**describe().as_dict(), "python": platform.python_version(),
            "system": platform.platform()}


def flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    """Leaves of a JSON document as (dotted.path, value), numbers and short strings only."""
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in flatten(v, f"{prefix}{k}.")]
    if isinstance(obj, list):
        if len(obj) > 12:
            return []
        return [kv for i, v in enumerate(obj) for kv in flatten(v, f"{prefix}{i}.")]
    if isinstance(obj, (bool, int, float)) or (
            isinstance(obj, str) and len(obj) < 60):
        return [(prefix.rstrip("."), obj)]
    return []


def kept_entries(previous: Path, rerun: list[str]) -> dict:
    """The entries of an earlier results.json for benchmarks not run now, each naming the
    machine and date it was measured on (older files kept those once, at the top)."""
    if not previous.exists():
        return {}
    old = json.loads(previous.read_text())
    m = old.get("machine", {})
    line = m.get("line") or (f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores, "
                             f"{m.get('memory_gib', '?')} GiB (vector extensions not recorded)")
    kept = {}
    for name, entry in old.get("benchmarks", {}).items():
        if name not in rerun:
            kept[name] = {"machine": line, "started": old.get("started"), **entry}
    return kept


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(HERE), help="folder for results.json/results.md")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these")
    parser.add_argument("--add", nargs="*", default=[], metavar="NAME=JSON",
                        help="run nothing: fold figures a benchmark wrote with --json when run "
                             "by hand (e.g. bench/scale.py, hours) into results.json/md as "
                             "NAME, every other entry kept")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "benchmarks": {}}
    if any("=" not in a for a in args.add):
        parser.error("--add takes NAME=JSON")
    added = dict(a.split("=", 1) for a in args.add)
    if set(added) - set(BENCHES):
        parser.error(f"--add: no benchmark named {sorted(set(added) - set(BENCHES))}; "
                     f"choose from {sorted(BENCHES)}")
    if added:
        args.only = [n for n in added if n in BENCHES]
    kept = kept_entries(out / "results.json", args.only) if args.only else {}
    for name, script in BENCHES.items():
        if args.only and name not in args.only:
            if name in kept:
                results["benchmarks"][name] = kept[name]
            continue
        if name in added:
            figures = json.loads(Path(added[name]).read_text())
            results["benchmarks"][name] = {
                "exit_code": 0, "seconds": None, "started": results["started"],
                "machine": figures.get("machine", results["machine"]["line"]),
                "command": f"{' '.join(script)} (run by hand, folded in with --add)",
                "figures": figures}
            continue
        path = out / f".{name}.json"
        path.unlink(missing_ok=True)
        print(f"== bench {name}: {' '.join(script)} on {results['machine']['line']}",
              flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, *script, "--json", str(path)],
                               cwd=HERE.parent)
        entry = {"exit_code": code, "seconds": round(time.monotonic() - started, 1),
                 "machine": results["machine"]["line"], "started": results["started"]}
        if path.exists():
            entry["figures"] = json.loads(path.read_text())
            path.unlink()
        results["benchmarks"][name] = entry
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    m = results["machine"]
    lines = [f"Machine: {m['line']}, Python {m['python']} ({results['started']}).", ""]
    if kept:
        lines += [f"This run: {', '.join(args.only)}. Kept from earlier runs:", "",
                  *(f"- {name}: {entry['started']}, {entry['machine']}"
                    for name, entry in results["benchmarks"].items() if name in kept), ""]
    lines += ["| figure | measured | goal |", "|---|---|---|", *headline_rows(results), "",
              "All figures:", "",
              "| benchmark | figure | value |", "|---|---|---|"]
    for name, entry in results["benchmarks"].items():
        if entry["exit_code"]:
            lines.append(f"| {name} | FAILED (exit {entry['exit_code']}) | |")
        for key, value in flatten(entry.get("figures", {})):
            lines.append(f"| {name} | {key} | {fmt(value)} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return max((e["exit_code"] for e in results["benchmarks"].values()), default=0)


if __name__ == "__main__":
    sys.exit(main())
