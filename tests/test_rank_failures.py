"""Start-up and rank failures (issue 24, item 10), with real processes and real signals:

- a TF_CONFIG naming 2 workers with only one started: `train --engine tf` waits a bounded
  time (IMNET64_PEER_TIMEOUT), then one line naming who did not come; SIGTERM and SIGINT
  during the wait end it at once (exit 75);
- kill -9 of the `--np 2 --engine tf` launcher: both ranks end (they get SIGTERM, checkpoint
  and exit) instead of training on as orphans, and SIGTERM to one tf rank stops both;
- kill -9 of rank 0 (or rank 1) under `--np 2`, both engines: status.json never stays at
  "running".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster.launch import free_local_ports
from imnet64.cluster.preemption import REQUEUE_EXIT_CODE

import pytest
from tiny_dataset import build_tiny_dataset
from train_helpers import TINY, cli, env, run_until, status

ENGINES = [pytest.param("horovod", marks=pytest.mark.requires_horovod), "tf"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=24, shards=2)


def _alone_of_two(extra_env: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    workers = [f"localhost:{p}" for p in free_local_ports(2)]
    config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
    return {**env(), "TF_CONFIG": json.dumps(config), **(extra_env or {})}, workers[1]


def _popen(args, environment) -> subprocess.Popen:
    return subprocess.Popen(args, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def test_a_worker_that_never_comes_is_named_after_the_timeout(dataset, tmp_path):
    environment, missing = _alone_of_two({"IMNET64_PEER_TIMEOUT": "5"})
    proc = _popen(cli("train", dataset, tmp_path / "run", *TINY, "--engine", "tf"), environment)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        _kill_group(proc)
    assert proc.returncode == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert f"rank 1 ({missing}) did not come" in errors[0] and "waited 5 s" in errors[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_wait_for_peers_ends_it(dataset, tmp_path, sig):
    environment, missing = _alone_of_two()
    proc = _popen(cli("train", dataset, tmp_path / "run", *TINY, "--engine", "tf"), environment)
    lines, sent = [], None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if sent is None and "waiting up to" in line:
                proc.send_signal(sig)
                sent = time.monotonic()
        proc.wait(timeout=60)
    finally:
        _kill_group(proc)
    out = "".join(lines)
    assert sent is not None, out[-3000:]
    assert proc.returncode == REQUEUE_EXIT_CODE, out[-3000:]
    assert f"stop requested (signal {sig.name}) while rank 0 waited" in out
    assert f"rank 1 ({missing}) not there" in out and "Traceback" not in out


def _ranks_of(run_dir: Path) -> dict[int, int]:
    """pid -> rank of the `train` ranks (not the launcher) running for `run_dir`."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run_dir).encode() not in cmdline or b"imnet64_cli.main" not in cmdline:
            continue
        variables = dict(v.split(b"=", 1) for v in environ if b"=" in v)
        if b"HOROVOD_RANK" in variables:
            found[int(proc.name)] = int(variables[b"HOROVOD_RANK"])
        elif b"TF_CONFIG" in variables:
            found[int(proc.name)] = json.loads(variables[b"TF_CONFIG"])["task"]["index"]
    return found


def _gone(pids, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()
                 and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1][:3]]
        if not alive:
            return True
        time.sleep(0.5)
    return False


LONG = [*TINY, "--epochs", 3, "--warmup-epochs", 1, "--steps-per-epoch", 400, "--log-every", 0]


def test_kill_9_of_the_tf_launcher_ends_both_ranks(dataset, tmp_path):
    run_dir = tmp_path / "run"
    ranks: dict[int, int] = {}

    def kill_launcher(proc: subprocess.Popen) -> None:
        ranks.update(_ranks_of(run_dir))
        proc.send_signal(signal.SIGKILL)  # the launcher alone: its ranks are left to die

    code, out = run_until(cli("train", dataset, run_dir, *LONG, "--np", 2, "--engine", "tf"),
                          lambda line: "epoch 1/3 step 3/400" in line, kill_launcher,
                          timeout=600)
    assert sorted(ranks.values()) == [0, 1], ranks
    assert _gone(ranks, within_s=60), f"ranks still running: {_ranks_of(run_dir)}"
    st = status(run_dir)
    assert st["state"] != "running", st
    assert st["epoch"] == 0 and st["step_in_epoch"] < 400  # they did not train on


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("victim", [0, 1])
def test_kill_9_of_a_rank_never_leaves_status_running(engine, victim, dataset, tmp_path):
    run_dir = tmp_path / "run"

    def kill_rank(proc: subprocess.Popen) -> None:
        pid = next(p for p, r in _ranks_of(run_dir).items() if r == victim)
        os.kill(pid, signal.SIGKILL)

    code, out = run_until(cli("train", dataset, run_dir, *LONG, "--np", 2, "--engine", engine),
                          lambda line: "epoch 1/3 step 3/400" in line, kill_rank, timeout=600)
    assert code != 0, out[-3000:]
    st = status(run_dir)
    # recorded by the launcher (the rank ended by SIGKILL), or by a surviving rank 0 whose
    # collective failed (horovod's HorovodInternalError, tf's UnavailableError)
    assert st["state"] == "failed" and st["error"], st
    assert not _ranks_of(run_dir)


def test_sigterm_to_one_tf_rank_stops_both(dataset, tmp_path):
    """`kill PID` of one rank (as scancel does to each task): TensorFlow's coordination
    service must not swallow SIGTERM (it did: the rank trained on to the end)."""
    run_dir = tmp_path / "run"

    def term_rank_1(proc: subprocess.Popen) -> None:
        pid = next(p for p, r in _ranks_of(run_dir).items() if r == 1)
        os.kill(pid, signal.SIGTERM)

    code, out = run_until(cli("train", dataset, run_dir, *LONG, "--np", 2, "--engine", "tf"),
                          lambda line: "epoch 1/3 step 3/400" in line, term_rank_1,
                          timeout=600)
    assert code == REQUEUE_EXIT_CODE, out[-3000:]
    st = status(run_dir)
    # rank 0 stopped on its peer's request (status.json: preempted, "stop requested by a peer")
    assert st["state"] in ("preempted", "stopped") and st["epoch"] == 0, st
    assert 3 <= st["step_in_epoch"] < 400 and Path(st["checkpoint"] + ".index").is_file(), st
