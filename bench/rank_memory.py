"""Peak resident memory of one `imnet64 train` rank: the figure `train --np N` checks N
against (imnet64.cluster.rank_limits.RANK_RSS_BYTES).

  .venv/bin/python bench/rank_memory.py [--engines horovod,tf] [--np 2] [--steps 6]
      [--json PATH]

For each engine, `imnet64 train --np N` with the default model and batch size runs a few
steps on a dataset of real 64x64 photo crops; every 0.2 s the peak RSS (VmHWM in
/proc/PID/status) of each rank process (a descendant running `imnet64_cli.main train` with
IMNET64_SELF_LAUNCHED=1) is read. The launcher itself and horovodrun are reported apart.
Printed: each rank's peak, side by side per engine, and the machine line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    """Children of every thread of `pid` (horovodrun starts its ranks from threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _hwm_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _is_rank(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    # `python -m imnet64_cli.main train ...` itself (horovodrun's command line names it too)
    return cmd[1:4] == [b"-m", b"imnet64_cli.main", b"train"] \
        and b"IMNET64_SELF_LAUNCHED=1" in environ


def measure(engine: str, dataset: Path, work: Path, np_: int, steps: int) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{engine}-", dir=work)) / "run"
    cmd = [sys.executable, "-m", "imnet64_cli.main", "train", str(dataset), str(run_dir),
           "--epochs", "1", "--warmup-epochs", "0", "--steps-per-epoch", str(steps),
           "--log-every", "600", "--np", str(np_), "--engine", engine]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ranks: dict[int, int] = {}
    others: dict[int, int] = {}
    started = time.monotonic()
    while proc.poll() is None:
        for pid in _descendants(proc.pid):
            hwm = _hwm_bytes(pid)
            if hwm is None:
                continue
            (ranks if _is_rank(pid) else others)[pid] = max(hwm, ranks.get(pid, 0),
                                                           others.get(pid, 0))
        launcher = _hwm_bytes(proc.pid)
        if launcher:
            others[proc.pid] = launcher
        time.sleep(0.2)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"{engine}: train exited {proc.returncode}:\n{out[-3000:]}")
    return {"engine": engine, "np": np_, "seconds": round(time.monotonic() - started, 1),
            "rank_peak_rss_mib": sorted(round(v / 2**20) for v in ranks.values()),
            "other_processes_peak_rss_mib": sorted(round(v / 2**20) for v in others.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="horovod,tf")
    parser.add_argument("--np", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    import imnet64  # noqa: F401  (Keras 2 before TensorFlow, for the dataset writer)
    from imnet64.cluster.machine import machine_line

    from tiny_dataset import build_tiny_dataset

    engines = [e for e in a.engines.split(",") if e != "horovod" or find_spec("horovod")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = build_tiny_dataset(Path(tmp) / "data", per_class=60)
        for engine in engines:
            results.append(measure(engine, dataset, Path(tmp), a.np, a.steps))
    print(f"machine: {machine_line()}; load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'engine':<8} {'ranks':>5} {'peak RSS per rank (MiB)':>26} "
          f"{'launcher/horovodrun (MiB)':>28}")
    for r in results:
        print(f"{r['engine']:<8} {r['np']:>5} {str(r['rank_peak_rss_mib']):>26} "
              f"{str(r['other_processes_peak_rss_mib']):>28}")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine_line(), "results": results},
                                           indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
