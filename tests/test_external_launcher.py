"""kill -9 (or SIGSTOP) of one tf.distribute rank started by an outside launcher (TF_CONFIG
by hand, as srun or a site's launcher would: no `train --np` of ours to record anything),
issue 24 round 3:

- the survivor ends with one `error:` line naming the lost peer (not TensorFlow's
  many-line UnavailableError and a traceback), exit 1;
- rank 1 killed: rank 0 survives and writes status.json "failed" with that line;
- rank 0 killed: nobody can write status.json, which keeps "running"; `train-status`
  reports "died", naming the killed rank 0's pid.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster.launch import free_local_ports

import pytest
from tiny_dataset import build_tiny_dataset
from train_helpers import TINY, cli, env, status

pytestmark = pytest.mark.slow

LONG = [*TINY, "--epochs", 2, "--warmup-epochs", 1, "--steps-per-epoch", 400, "--log-every", 0,
        "--engine", "tf"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=24, shards=2)


def _start_workers(dataset: Path, run_dir: Path) -> list[subprocess.Popen]:
    workers = [f"localhost:{p}" for p in free_local_ports(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(subprocess.Popen(
            cli("train", dataset, run_dir, *LONG), env={**env(), "TF_CONFIG": json.dumps(config)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True))
    return procs


@pytest.mark.parametrize("how", ["kill", "stop"])
@pytest.mark.parametrize("victim", [0, 1])
def test_a_rank_lost_under_an_outside_launcher(victim, how, dataset, tmp_path):
    """`stop` (SIGSTOP: a rank that no longer answers, as behind a lost node) must not hang
    the survivor either: TensorFlow's coordination heartbeats end it (about 12-20 s here)."""
    run_dir = tmp_path / "run"
    procs = _start_workers(dataset, run_dir)
    outputs: list[list[str]] = [[], []]
    started = threading.Event()

    def read(index: int) -> None:
        for line in procs[index].stdout:
            outputs[index].append(line)
            if "epoch 1/2 step 3/400" in line:
                started.set()

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(2)]
    for reader in readers:
        reader.start()
    try:
        assert started.wait(timeout=300), "".join(outputs[0])[-3000:]
        procs[victim].send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        survivor = procs[1 - victim]
        t_kill = time.monotonic()
        code = survivor.wait(timeout=120)
        waited = time.monotonic() - t_kill
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()  # (SIGKILL ends a stopped process too)
            proc.wait()
        for reader in readers:
            reader.join(timeout=10)
    out = "".join(outputs[1 - victim])
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert errors[0].startswith(f"error: rank {1 - victim} lost rank {victim} "), errors[0]
    assert "rerun the whole job" in errors[0] and waited < 90, (errors[0], waited)
    st = status(run_dir)
    if how == "stop" and victim == 0:
        return  # the stopped rank 0 still exists: its "running" is not contradicted
    if victim == 1:  # rank 0 survived and said how it ended
        assert st["state"] == "failed" and st["exit_code"] == 1, st
        assert st["error"] == errors[0].removeprefix("error: "), st
        return
    assert st["state"] == "running" and st["pid"] == procs[0].pid, st  # rank 0 was killed
    done = subprocess.run(cli("train-status", run_dir), env=env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stdout.startswith("died: status.json says running"), \
        done.stdout + done.stderr
    assert f"pid {procs[0].pid} no longer runs on this host" in done.stdout, done.stdout
