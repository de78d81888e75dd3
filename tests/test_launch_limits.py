"""`imnet64 train --np N` on one machine (issue 24, item 2): N above what the machine holds is
refused unless --oversubscribe, and a signal while many ranks are still starting ends the
launch, and every process it started at any depth, within seconds, on both engines."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from imnet64.cluster import launch_tree
from imnet64.cluster.preemption import REQUEUE_EXIT_CODE
from imnet64.cluster.rank_limits import RANK_RSS_BYTES, Capacity, check_local_ranks
from imnet64.errors import UserError

import pytest
from tiny_dataset import build_tiny_dataset
from train_helpers import TINY, cli, env

ENGINES = [pytest.param("horovod", marks=pytest.mark.requires_horovod), "tf"]
GIB = 1 << 30


@pytest.mark.parametrize(("capacity", "limit", "why"), [
    (Capacity(cores=2, gpus=0, memory_bytes=24 * GIB), 2, "2 core(s) and no GPU"),
    (Capacity(cores=64, gpus=4, memory_bytes=512 * GIB), 4, "4 GPU(s), one rank each"),
    (Capacity(cores=64, gpus=0, memory_bytes=6 * GIB), 6, "6.0 GiB of memory"),
])
def test_the_limit_is_gpus_else_cores_and_memory(capacity, limit, why):
    assert check_local_ranks(limit, capacity) == limit
    with pytest.raises(UserError) as refused:
        check_local_ranks(limit + 1, capacity)
    message = str(refused.value)
    assert f"--np {limit + 1}: this machine holds at most {limit} rank(s)" in message
    assert why in message and "--oversubscribe" in message and "\n" not in message
    assert check_local_ranks(1000, capacity, oversubscribe=True) == 1000
    assert RANK_RSS_BYTES == GIB  # the figure the message states (bench/rank_memory.py)


@pytest.mark.parametrize("engine", ENGINES)
def test_np_above_the_cores_is_one_line_and_starts_nothing(engine, tmp_path):
    too_many = len(os.sched_getaffinity(0)) + 1
    mark = uuid.uuid4().hex
    done = subprocess.run(
        cli("train", tmp_path / "data", tmp_path / "run", "--np", too_many, "--engine", engine),
        capture_output=True, text=True, timeout=300,
        env={**env(), "CUDA_VISIBLE_DEVICES": "", "IMNET64_TEST_MARK": mark})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: --np {too_many}: this machine holds at most ")
    assert done.stderr.count("\n") == 1 and "--oversubscribe" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


def _marked(mark: str) -> list[int]:
    """Live processes carrying IMNET64_TEST_MARK=mark (this test's launch, at any depth)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"IMNET64_TEST_MARK={mark}".encode() in environ and launch_tree._alive(
                int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_a_signal_during_a_slow_start_of_many_ranks_ends_them_all(engine, tmp_path):
    """6 ranks on this 2-core machine (--oversubscribe): their start-up (TensorFlow's import
    in each) takes a minute or more. SIGTERM to the launcher once they are starting: it exits
    75 within seconds, and no process it started is left (horovodrun's ranks included)."""
    dataset = build_tiny_dataset(tmp_path / "data", per_class=20)
    mark = uuid.uuid4().hex
    args = cli("train", dataset, tmp_path / "run", *TINY, "--epochs", 1, "--log-every", 0,
               "--np", 6, "--oversubscribe", "--engine", engine)
    proc = subprocess.Popen(args, env={**env(), "IMNET64_TEST_MARK": mark},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(_marked(mark)) < 7 and time.monotonic() < deadline:  # launcher + 6 ranks
            time.sleep(0.2)
        assert len(_marked(mark)) >= 7, "the ranks never started"
        time.sleep(1.0)
        assert not (tmp_path / "run" / "status.json").exists()  # still starting
        signalled = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - signalled
        left = _marked(mark)
    finally:
        for pid in _marked(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == REQUEUE_EXIT_CODE, out[-3000:]
    assert "while the ranks were starting: ending them" in out, out[-3000:]
    assert took < 20, f"the launcher took {took:.1f} s to stop"
    assert left == [], f"left running after the launcher exited: {left}"
    print(f"{engine}: launcher stopped {took:.1f} s after SIGTERM; 6 ranks ended")
