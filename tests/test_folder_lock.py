"""One writer per output folder (issue 24, item 7): imnet64.cluster.folder_lock on its own
(a second writer refused with the holder named; a lock left by kill -9 taken over; a live
one never broken, also where flock does not reach the other node), then `train` (1 rank,
`--np 2` on both engines) and `shard-records` started twice together on one folder, and
`train DATASET_DIR DATASET_DIR`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster import folder_lock
from imnet64.cluster.folder_lock import Holder, judge
from imnet64.errors import UserError

import pytest
from records_support import sample
from tiny_dataset import build_tiny_dataset
from train_helpers import TINY, cli, env, status

ENGINES = [pytest.param("horovod", marks=pytest.mark.requires_horovod), "tf"]
HOST = socket.gethostname()

HOLD = """
import sys, time
from imnet64.cluster import folder_lock
lock = folder_lock.acquire(sys.argv[1], "test holder", part=(sys.argv[2:] or [None])[0])
print("held", flush=True)
time.sleep(600)
"""


def _holder_process(folder: Path, part: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), *([part] if part else [])],
                            stdout=subprocess.PIPE, text=True, env=env())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _record(**fields) -> Holder:
    now = time.time()
    return Holder(**{"host": HOST, "pid": os.getpid(), "since": now, "heartbeat": now,
                     "what": "test", "token": "t", **fields})


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    with folder_lock.held(tmp_path / "out", "imnet64 train"), \
            pytest.raises(UserError) as caught:
        folder_lock.acquire(tmp_path / "out", "imnet64 train")
    message = str(caught.value)
    assert f"host {HOST}, pid {os.getpid()}, since 20" in message and "UTC" in message
    # released: the next writer gets it
    folder_lock.acquire(tmp_path / "out", "imnet64 train").release()


def test_a_lock_left_by_kill_9_is_taken_over_and_a_live_one_is_not(tmp_path, caplog):
    folder = tmp_path / "out"
    proc = _holder_process(folder)
    try:
        with pytest.raises(UserError, match=f"test holder on host {HOST}, pid {proc.pid}"):
            folder_lock.acquire(folder, "second")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the record still names the dead holder; the lock is taken over, with a log line
    assert f'"pid": {proc.pid}' in (folder / ".imnet64.lock").read_text()
    with folder_lock.held(folder, "third") as lock:
        assert lock.holder.pid == os.getpid()
    assert any(f"pid {proc.pid}" in r.getMessage() and "took over" in r.getMessage()
               for r in caplog.records)


def test_stale_or_live_by_host_pid_and_heartbeat():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # this host, no flock on the filesystem: the pid decides
    assert judge(_record(), flock_free=None) is None  # this very process: live
    assert "no longer runs" in judge(_record(pid=dead.pid), flock_free=None)
    assert "another process" in judge(_record(pid_started="1"), flock_free=None)
    # another host: the heartbeat's age decides, whatever flock said
    now = time.time()
    fresh = _record(host="other-node", heartbeat=now - 30)
    assert judge(fresh, flock_free=True, now=now) is None
    old = _record(host="other-node", heartbeat=now - folder_lock.STALE_S - 1)
    assert "heartbeat" in judge(old, flock_free=True, now=now)


def test_a_fresh_record_of_another_node_is_honoured_even_when_flock_is_free(tmp_path):
    """Where flock is local to each node, the record is what stops the second writer."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".imnet64.lock").write_bytes(_record(host="node7", pid=4242).to_bytes())
    with pytest.raises(UserError, match="on host node7, pid 4242"):
        folder_lock.acquire(folder, "second")
    stale = _record(host="node7", pid=4242, heartbeat=time.time() - 3600)
    (folder / ".imnet64.lock").write_bytes(stale.to_bytes())
    folder_lock.acquire(folder, "second").release()


def test_the_heartbeat_is_refreshed_while_held(tmp_path):
    with folder_lock.held(tmp_path, "beating", heartbeat_s=0.1) as lock:
        first = lock.holder.heartbeat
        time.sleep(0.5)
        on_disk = Holder.parse((tmp_path / ".imnet64.lock").read_bytes())
        assert on_disk.token == lock.holder.token and on_disk.heartbeat > first
    assert not (tmp_path / ".imnet64.lock").exists()  # released: removed


def test_folders_that_nest_are_refused(tmp_path):
    for a, b in ((tmp_path, tmp_path), (tmp_path / "x", tmp_path), (tmp_path, tmp_path / "x")):
        with pytest.raises(UserError):
            folder_lock.check_apart("RUN_DIR", a, "DATASET_DIR", b)
    folder_lock.check_apart("RUN_DIR", tmp_path / "a", "DATASET_DIR", tmp_path / "b")


def test_the_whole_folder_and_its_rank_parts_exclude_each_other(tmp_path):
    """Issue 24's last round: a single-rank writer (the whole folder) and the ranks of a
    multi-rank job (each its part rank-i-of-n) did not see each other."""
    folder = tmp_path / "out"
    whole = _holder_process(folder)  # a live writer of the whole folder, another process
    try:
        with pytest.raises(UserError, match=rf"test holder on host {HOST}, pid {whole.pid}.*"
                                            r"\(the whole folder\)"):
            folder_lock.acquire(folder, "rank 0", part=folder_lock.rank_part(0, 2))
        assert not (folder / ".imnet64-rank-0-of-2.lock").exists()  # refused: released
    finally:
        whole.kill()
        whole.wait()
    # the whole-folder writer was killed: its lock no longer counts; the ranks of one job
    # (one count) run together, and then the whole folder is refused while any of them lives
    with folder_lock.held(folder, "rank 0", part=folder_lock.rank_part(0, 2)), \
            folder_lock.held(folder, "rank 1", part=folder_lock.rank_part(1, 2)):
        with pytest.raises(UserError, match=r"rank 0 on host .* \(its part rank-0-of-2\)"):
            folder_lock.acquire(folder, "single rank")
        # a job of another rank count deals the shards otherwise: refused too
        with pytest.raises(UserError, match=r"\(its part rank-[01]-of-2\)"):
            folder_lock.acquire(folder, "rank 0 of 3", part=folder_lock.rank_part(0, 3))
    folder_lock.acquire(folder, "single rank").release()  # all released: free


def test_a_rank_part_held_by_another_process_refuses_the_whole_and_a_killed_one_does_not(
        tmp_path):
    folder = tmp_path / "out"
    rank = _holder_process(folder, folder_lock.rank_part(1, 2))
    try:
        with pytest.raises(UserError, match=rf"pid {rank.pid}.*\(its part rank-1-of-2\)"):
            folder_lock.acquire(folder, "single rank")
        # the same job's other rank is welcome
        folder_lock.acquire(folder, "rank 0", part=folder_lock.rank_part(0, 2)).release()
    finally:
        rank.send_signal(signal.SIGKILL)
        rank.wait()
    assert (folder / ".imnet64-rank-1-of-2.lock").exists()  # left by kill -9, with its record
    folder_lock.acquire(folder, "single rank").release()


# ---- the commands ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=24, shards=2)


def _together(*commands: list[str], timeout: float = 900) -> list[tuple[int, str]]:
    procs = [subprocess.Popen(c, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True) for c in commands]
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return results


def _one_refused(results: list[tuple[int, str]], folder: Path) -> None:
    codes = sorted(code for code, _ in results)
    outs = "\n----\n".join(out[-2500:] for _, out in results)
    assert codes == [0, 2], outs
    refused = next(out for code, out in results if code == 2)
    errors = [line for line in refused.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused, refused[-3000:]
    assert f"{folder} is being written by imnet64" in errors[0] and f"host {HOST}" in errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("np_", [None, *ENGINES])
def test_two_trains_started_together_on_one_run_dir(np_, dataset, tmp_path):
    run_dir = tmp_path / "run"
    extra = [] if np_ is None else ["--np", "2", "--engine", np_]
    # long enough that the first is still training when the second has started up
    args = cli("train", dataset, run_dir, *TINY, "--epochs", 2, "--warmup-epochs", 1,
               "--steps-per-epoch", 60, "--log-every", 0, *extra)
    _one_refused(_together(args, args), run_dir)
    assert status(run_dir)["state"] == "finished"


@pytest.mark.slow
def test_two_shard_records_with_other_options_started_together(tmp_path):
    root, _ = sample(tmp_path, 40)
    out = tmp_path / "ds"
    base = cli("shard-records", root, out)
    results = _together([*base, "--val-fraction", "0.2"], [*base, "--val-fraction", "0.5"])
    _one_refused(results, out)
    done = subprocess.run(cli("inspect", out, "--verify"), env=env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "train --np 2", "shard-records"])
def test_a_held_lock_refuses_the_command_and_nothing_is_written(command, dataset, tmp_path):
    folder = tmp_path / "out"
    holder = _holder_process(folder)
    try:
        if command == "shard-records":
            args = cli("shard-records", sample(tmp_path, 10)[0], folder)
        else:
            args = cli("train", dataset, folder, *TINY, *command.split()[1:], "--engine", "tf")
        done = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"test holder on host {HOST}, pid {holder.pid}, since" in done.stderr
    assert [p.name for p in folder.iterdir()] == [".imnet64.lock"]


@pytest.mark.slow
@pytest.mark.parametrize("held", ["whole", "rank part"])
def test_single_and_multi_rank_shard_records_refuse_each_other(held, tmp_path):
    """The real command, as a rank of a 2-rank Slurm step (SLURM_PROCID/SLURM_NTASKS) while
    a single-rank writer holds the folder, and as a single-rank run while a rank holds its
    part: one `error:` line naming the holder, nothing written."""
    folder = tmp_path / "out"
    root = sample(tmp_path, 10)[0]
    if held == "whole":
        holder = _holder_process(folder)
        extra = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}
    else:
        holder = _holder_process(folder, folder_lock.rank_part(0, 2))
        extra = {}
    try:
        done = subprocess.run(cli("shard-records", root, folder), env={**env(), **extra},
                              capture_output=True, text=True, timeout=600)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"test holder on host {HOST}, pid {holder.pid}, since" in done.stderr
    assert [p.name for p in folder.iterdir()] == [
        ".imnet64.lock" if held == "whole" else ".imnet64-rank-0-of-2.lock"]


def test_train_into_its_own_dataset_folder_is_refused(dataset, tmp_path):
    before = sorted(p.name for p in dataset.iterdir())
    for run_dir in (dataset, dataset / "run"):
        done = subprocess.run(cli("train", dataset, run_dir, *TINY), env=env(),
                              capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.count("error:") == 1, done.stderr
        assert "DATASET_DIR" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in dataset.iterdir()) == before


def test_label_parts_use_the_same_lock_and_name_the_holder(tmp_path):
    """label's per-part lock is this module's, at the part's own lock path."""
    from imnet64.formats.label_parts import PartPaths
    from imnet64.label.run import _shard_lock

    paths = PartPaths(tmp_path / "labels", "part-00000-of-00002")
    with _shard_lock(paths), pytest.raises(UserError) as caught, _shard_lock(paths):
        pass
    assert f"imnet64 label (shard part-00000-of-00002) on host {HOST}, pid {os.getpid()}" \
        in str(caught.value)
    with _shard_lock(PartPaths(tmp_path / "labels", "part-00001-of-00002")):
        pass  # another part: its own lock
    assert not paths.lock.exists()  # released
