"""`imnet64 label` on a full-size ImageNet64 batch file: sharding equality and memory per rank.

Makes a synthetic `train_data_batch_1` in the official layout (pickle protocol 3, dict of
`data` uint8 (N, 12288) as R, G, B planes, `labels` 1..1000, `mean`), by default with the
size of a real one (128 116 rows, 1.57 GB; not shipped, written to --work and deleted),
then labels it:

  whole    one process, the whole file                       (--num-shards 1)
  shard i  four processes one after the other, a quarter each (--num-shards 4)

and checks that the four shards together give exactly the labels (and truths) of the
unsharded run, name by name. Each process's peak RSS (VmHWM, sampled from /proc every 50 ms
as in bench/label.py) is reported: the reader keeps only offsets and labels, so a rank's
memory should not grow with the file (1.6 GB) or with its share of it.

Teacher: labeling 128 k images with MobileNet V2 takes ~10 min per pass on 2 cores, so the
equality and RSS runs use a TINY teacher this bench builds (average pool to 7x7 + one dense
layer to 1001 logits, a SavedModel with the real teacher's interface): the reading,
decoding, resizing, batching, writing and sharding are the real ones, the network is not.
The real offline teacher then labels a slice (--slice rows, as shard 0 of N) of the same
file, for its speed and memory.

`--part M` labels 1/M of the rows with the same file: "whole" is shard 0 of M and the four
shards are shards 0..3 of 4M, which tile exactly the same rows (shard_range is
floor(index * total / count)). The file stays full size, so what a rank holds of a 1.6 GB
file is still measured; only the labeling is shorter (on a loaded machine).

  .venv/bin/python bench/imagenet64_batch.py [--rows 128116] [--part 1] [--slice 512]
      [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from label import _rss_profile  # noqa: E402  (the bench next door: /proc sampling)

FULL_ROWS = 128_116  # the size of train_data_batch_1 .. _9 (1 281 167 / 10)


def write_batch_file(path: Path, rows: int, seed: int = 0) -> None:
    """The official layout, written in a child process (pickling a 1.6 GB array holds it
    twice; that memory must not count against this bench or the labelers)."""
    code = f"""
import pickle, numpy as np
rng = np.random.default_rng({seed})
rows = {rows}
data = np.empty((rows, 12288), np.uint8)
for s in range(0, rows, 4096):
    n = min(4096, rows - s)
    # 8x8 blocks per plane, upscaled: compressible like photos, unlike noise
    blocks = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
    data[s:s + n] = blocks.repeat(8, axis=2).repeat(8, axis=3).reshape(n, 12288)
labels = rng.integers(1, 1001, rows).tolist()
with open({str(path)!r}, "wb") as f:
    pickle.dump({{"data": data, "labels": labels, "mean": data.mean(axis=0)}}, f, protocol=3)
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def make_tiny_teacher(out: Path) -> None:
    """A SavedModel with the teacher's interface ([0,1] RGB 224x224 -> 1001 logits)."""
    from imnet64.teacher.export import export_hub_style_saved_model

    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.layers.Input((224, 224, 3)),
        tf.keras.layers.AveragePooling2D(32),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(1001),
    ])
    export_hub_style_saved_model(model, out)


def _label(exe: str, batch: Path, out: Path, teacher: str, shards: int, index: int,
           batch_size: int, env: dict[str, str]) -> dict:
    cmd = [exe, "label", str(batch), str(out), "--teacher", teacher,
           "--num-shards", str(shards), "--shard-index", str(index),
           "--batch-size", str(batch_size), "--progress-every", "0"]
    start = time.perf_counter()
    profile = _rss_profile(cmd, env)
    seconds = time.perf_counter() - start
    if profile["exit_code"] != 0:
        raise SystemExit(f"label shard {index}/{shards} failed: {profile['stderr_tail']}")
    from imnet64.formats.label_parts import part_paths, read_summary

    summary = read_summary(part_paths(out, index, shards).summary)
    return {"shard": f"{index}/{shards}", "images": summary["labeled"],
            "rejected": summary["rejected"], "peak_rss_mb": profile["peak_rss_mb"],
            "peak_rss_labeling_mb": profile["peak_rss_labeling_mb"],
            "images_per_second": summary["images_per_second"],
            "process_seconds": round(seconds, 1), "truth": summary.get("truth")}


def _rows(out: Path, shards: list[tuple[int, int]]) -> dict[str, tuple[str, str]]:
    """name -> (label, truth) from the part CSVs of (index, count) shards."""
    from imnet64.formats.label_parts import part_paths

    found: dict[str, tuple[str, str]] = {}
    for i, count in shards:
        with open(part_paths(out, i, count).csv, newline="") as f:
            for row in csv.DictReader(f):
                assert row["path"] not in found, row["path"]
                found[row["path"]] = (row["label"], row["truth"])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS)
    parser.add_argument("--slice", type=int, default=512,
                        help="rows the real offline teacher labels (0: skip)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--part", type=int, default=1,
                        help="label 1/M of the rows (whole = shard 0 of M, the four shards "
                        "= shards 0..3 of 4M)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="imagenet64-bench-", dir=args.work))
    try:
        result = _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from imnet64.cluster.machine import describe

    result["machine"] = describe().as_dict()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def _run(args, work: Path) -> dict:
    batch = work / "train_data_batch_1"
    start = time.perf_counter()
    write_batch_file(batch, args.rows)
    written = time.perf_counter() - start
    size = batch.stat().st_size
    print(f"{batch.name}: {args.rows} rows, {size / 1e9:.3f} GB, written in {written:.0f} s",
          flush=True)
    # opening the file (scan the pickle, skip the pixels, read the labels) in this process
    from imnet64.label.inputs import open_inputs

    start = time.perf_counter()
    inputs = open_inputs(batch)
    open_seconds = time.perf_counter() - start
    assert len(inputs) == args.rows
    inputs.close()
    tiny = work / "tiny_teacher"
    make_tiny_teacher(tiny)
    exe = str(Path(sys.executable).with_name("imnet64"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    m = args.part
    whole = _label(exe, batch, work / "whole", str(tiny), m, 0, args.batch_size, env)
    print(f"whole: {whole}", flush=True)
    shards = []
    for i in range(4):
        shards.append(_label(exe, batch, work / "four", str(tiny), 4 * m, i, args.batch_size,
                             env))
        print(f"shard {i}/4: {shards[-1]}", flush=True)
    a, b = _rows(work / "whole", [(0, m)]), _rows(work / "four", [(i, 4 * m) for i in range(4)])
    same_names = a.keys() == b.keys()
    differ = sum(a[n] != b[n] for n in a) if same_names else None
    out = {
        "rows": args.rows, "file_bytes": size, "open_seconds": round(open_seconds, 2),
        "labeled_part": f"1/{m}", "rows_labeled": len(a),
        "teacher": "tiny (avg-pool 7x7 + dense 1001, built by this bench)",
        "batch_size": args.batch_size,
        "whole": whole, "four_shards": shards,
        "four_shards_equal_whole": bool(same_names and differ == 0),
        "names_equal": same_names, "rows_differing": differ,
    }
    if args.slice:
        count = max(1, args.rows // args.slice)
        out["real_teacher_slice"] = _label(exe, batch, work / "slice", "offline", count, 0,
                                           64, env)
        print(f"real teacher, shard 0/{count}: {out['real_teacher_slice']}", flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
