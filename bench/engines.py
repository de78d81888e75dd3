"""The two training engines side by side in one run (issue 18): `imnet64 train --np 2
--engine tf` (tf.distribute's MultiWorkerMirroredStrategy) vs `--engine horovod` (Horovod
over Gloo), 2 ranks on this machine, same model, batch, steps and dataset.

  .venv/bin/python bench/engines.py [--dataset DIR] [--steps 20] [--epochs 6]
      [--batch-size 32] [--widths 32,64,128] [--repeats 3,3,3] [--rounds 3] [--json PATH]

Every measurement is a fresh `imnet64 train --np 2` process; the engines alternate within
each round and the order flips from round to round, so a slow spell of the machine hits both
alike; every round is reported (no best-of). Images/s = the images of the timed epochs (all
but the first, which traces the graphs) / the wall time of their training loops
(history.json's `seconds`), both ranks together. On a stack without Horovod (the current
stack) only tf is measured and the ratio is left out. Without --dataset, bench/train.py's
dataset of real 64x64 photo crops is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train import _env, _from_history, _load, _model_args, make_dataset  # noqa: E402

RANKS = 2


def run_engine(a, engine: str, dataset: Path, work: Path) -> dict:
    """One `imnet64 train --np 2 --engine ENGINE` in a fresh RUN_DIR: its timed figures."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{engine}-", dir=work)) / "run"
    cmd = [sys.executable, "-m", "imnet64_cli.main", "train", str(dataset), str(run_dir),
           *_model_args(a), "--np", str(RANKS), "--engine", engine]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"imnet64 train --engine {engine} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return _from_history(run_dir, a.steps * a.batch_size * RANKS)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, help="an imnet64 dataset [default: built here]")
    p.add_argument("--steps", type=int, default=20, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=6, help="epochs (the first is not timed)")
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--widths", default="32,64,128")
    p.add_argument("--repeats", default="3,3,3")
    p.add_argument("--rounds", type=int, default=3, help="measurements of each engine")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args()
    if a.epochs < 3:
        p.error("--epochs must be at least 3 (the first one is not timed)")

    import imnet64  # noqa: F401  (Keras 2 before TensorFlow, for the dataset writer)
    from imnet64.cluster.machine import machine_line

    engines = ["tf", "horovod"] if importlib.util.find_spec("horovod") else ["tf"]
    print(f"machine: {machine_line()}", flush=True)
    rates: dict[str, list[float]] = {e: [] for e in engines}
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    with tempfile.TemporaryDirectory(prefix="imnet64-bench-engines-") as tmp:
        work = Path(tmp)
        dataset = a.dataset or make_dataset(work / "data")
        print(f"{RANKS} ranks, model widths {a.widths} repeats {a.repeats}, batch "
              f"{a.batch_size}/rank, {a.steps} steps x {a.epochs} epochs (epoch 1 not timed); "
              f"engines {', '.join(engines)}" + ("" if "horovod" in engines else
                                                 " (Horovod is not installed)"), flush=True)
        for r in range(a.rounds):
            for engine in engines if r % 2 == 0 else engines[::-1]:
                m = run_engine(a, engine, dataset, work)
                m["load_average_after"] = _load()
                runs[engine].append(m)
                rates[engine].append(m["images_per_s"])
                print(f"  round {r} --engine {engine:8s}: {m['images_per_s']:8.1f} images/s, "
                      f"slowest / median epoch {m['slowest_over_median_epoch']:.3f} "
                      f"(load {m['load_average_after']})", flush=True)
    results = {
        "config": {"ranks": RANKS, "widths": a.widths, "repeats": a.repeats,
                   "batch_size_per_rank": a.batch_size, "steps_per_epoch": a.steps,
                   "epochs": a.epochs, "rounds": a.rounds},
        "machine": machine_line(),
        "images_per_s_each_round": rates,
        "images_per_s_median": {e: statistics.median(v) for e, v in rates.items()},
        "runs": runs,
    }
    line = "images/s, median of rounds: " + ", ".join(
        f"{e} {v:.1f}" for e, v in results["images_per_s_median"].items())
    if "horovod" in rates:
        ratios = [t / h for t, h in zip(rates["tf"], rates["horovod"])]
        results["tf_over_horovod_each_round"] = ratios
        results["tf_over_horovod"] = statistics.median(ratios)
        line += "; tf / horovod each round: " + ", ".join(f"{x:.3f}" for x in ratios)
    print(line, flush=True)
    if a.json:
        from imnet64 import atomic

        atomic.write_json(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
