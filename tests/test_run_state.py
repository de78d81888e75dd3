"""A status.json that says "running" after its writer is gone (issue 24, round 3).

- kill -9 of a 1-rank `train` (what rank 0 under srun/mpirun/TF_CONFIG is: no launcher of
  ours is there to record the death): status.json keeps "running"; `train-status` must say
  "died" (the writer's pid no longer runs), and the next `train` resumes and says so;
- a writer on another host: its lock's heartbeat decides (fresh: running, old: died);
- a disk that fills up mid-run: status.json must say "failed" with the disk error's line
  (the run keeps a space reserve for it), and the rerun after space returns finishes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster.folder_lock import STALE_S, Holder, lock_path
from imnet64.train import run_state

import pytest
from test_disk_full import tmpfs  # noqa: F401  (the fixture: a real 3 MB tmpfs)
from tiny_dataset import build_tiny_dataset
from train_helpers import TINY, cli, env, run, run_until, status

HOST = socket.gethostname()
LONG = [*TINY, "--epochs", 2, "--warmup-epochs", 1, "--steps-per-epoch", 100, "--log-every", 0,
        "--engine", "tf"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=12, shards=1)


def _train_status(run_dir: Path) -> tuple[int, str]:
    done = subprocess.run(cli("train-status", run_dir), env=env(), capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.strip()


def _running_status(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps({
        "state": "running", "epoch": 0, "step_in_epoch": 5, "global_step": 5, "epochs": 3,
        "steps_per_epoch": 10, "time": time.time(), **fields}))


def _lock_record(run_dir: Path, **fields) -> None:
    now = time.time()
    holder = Holder(**{"host": HOST, "pid": os.getpid(), "since": now, "heartbeat": now,
                       "what": "imnet64 train", "token": "t", **fields})
    lock_path(run_dir).write_bytes(holder.to_bytes())


def test_running_is_believed_only_while_its_writer_lives(tmp_path):
    run_dir = tmp_path / "run"
    _running_status(run_dir, host="node7", pid=4242)
    # no lock at all (released, or never taken): the writer is gone
    state = run_state.current(run_dir)
    assert state.state == "died" and "no writer holds its lock" in state.why
    assert "pid 4242 on host node7" in state.why and state.line().startswith("died: ")
    # this host: the pid decides
    _lock_record(run_dir)  # this very process
    assert run_state.current(run_dir).state == "running"
    dead = subprocess.Popen(["true"])
    dead.wait()
    _lock_record(run_dir, pid=dead.pid)
    state = run_state.current(run_dir)
    assert state.state == "died" and f"pid {dead.pid} no longer runs on this host" in state.why
    # another host: the heartbeat's age decides
    _lock_record(run_dir, host="node7", pid=4242, heartbeat=time.time() - 30)
    assert run_state.current(run_dir).state == "running"
    _lock_record(run_dir, host="node7", pid=4242, heartbeat=time.time() - STALE_S - 5)
    state = run_state.current(run_dir)
    assert state.state == "died" and "heartbeat is" in state.why
    # a state other than running is what it says, whoever holds the lock
    _running_status(run_dir, state="finished")
    assert run_state.current(run_dir).state == "finished"


@pytest.mark.slow
def test_kill_9_of_a_single_rank_train_reads_as_died_then_resumes(dataset, tmp_path):
    run_dir = tmp_path / "run"
    seen: dict[str, object] = {}

    def look_then_kill(proc: subprocess.Popen) -> None:
        seen["live"] = _train_status(run_dir)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen["pid"] = proc.pid

    code, out = run_until(cli("train", dataset, run_dir, *LONG),
                          lambda line: "epoch 1/2 step 5/100" in line, look_then_kill)
    assert code == -signal.SIGKILL, out[-3000:]
    live_code, live_line = seen["live"]
    assert live_code == 1 and live_line.startswith("running since "), live_line
    assert status(run_dir)["state"] == "running"  # what the killed writer left
    dead_code, dead_line = _train_status(run_dir)
    assert dead_code == 1, dead_line
    assert dead_line.startswith("died: status.json says running since "), dead_line
    assert f"pid {seen['pid']} no longer runs on this host" in dead_line, dead_line
    # the next train takes over, says how the previous session ended, and finishes
    done = run(cli("train", dataset, run_dir, *LONG))
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"previous session of this run (pid {seen['pid']} on host {HOST}) died" \
        in done.stdout, done.stdout[-3000:]
    finished_code, finished_line = _train_status(run_dir)
    assert finished_code == 0, finished_line
    assert finished_line.startswith("finished: 2/2 epochs done, at "), finished_line


@pytest.mark.slow
def test_a_disk_that_fills_up_mid_run_leaves_status_failed(dataset, tmpfs):  # noqa: F811
    run_dir = tmpfs / "run"
    filler = tmpfs / "filler"

    def fill_up(proc: subprocess.Popen) -> None:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # every byte left, until the disk says no
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    code, out = run_until(cli("train", dataset, run_dir, *LONG, "--checkpoint-every", 20),
                          lambda line: "epoch 1/2 step 3/100" in line, fill_up)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert f"no space left in {run_dir}" in errors[0], errors[0]
    st = status(run_dir)
    assert st["state"] == "failed" and st["exit_code"] == 2, st
    assert st["error"].startswith(f"no space left in {run_dir}"), st
    assert not (run_dir / run_state.RESERVE).exists()
    failed_line = _train_status(run_dir)[1]
    assert failed_line.startswith("failed: 0/2 epochs done, step "), failed_line
    filler.unlink()
    done = run(cli("train", dataset, run_dir, *LONG, "--checkpoint-every", 20))
    assert done.returncode == 0, done.stdout[-3000:]
    assert status(run_dir)["state"] == "finished"
