"""Both training engines (issue 18), the same checks parametrised: `--engine horovod` (Horovod,
skipped on a stack without it) and `--engine tf` (tf.distribute's MultiWorkerMirroredStrategy).

- 2 ranks started by the engine's own launcher (horovodrun; TF_CONFIG for tf), each in its own
  folder: they train, end with equal weights, and only rank 0 writes.
- `--np 2` self-launch: a signal to the launching process stops both ranks at the same step
  (stop file), checkpoint, exit 75; the rerun resumes at that step with that step's LR and
  ends with equal weights on both ranks.
- `--np 2` signalled while the ranks start: exit 75, and the rerun trains.
- The launcher: what it starts for each engine, when it starts nothing, and that a tf rank
  that fails ends its peers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster import launch
from imnet64.cluster.preemption import REQUEUE_EXIT_CODE, StopRequest, stop_signals

import pytest
from tiny_dataset import build_tiny_dataset
from train_helpers import (
    TINY,
    assert_same_weights,
    cli,
    env,
    history,
    run,
    run_in_own_folders,
    run_until,
    seed_lr,
    status,
)

ENGINES = [pytest.param("horovod", marks=pytest.mark.requires_horovod), "tf"]
LR_MAX = 0.01  # TINY's --lr-max


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=60)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_two_ranks_train_agree_and_only_rank_0_writes(engine, dataset, tmp_path):
    """2 epochs, shuffled, LR scaled by 2, on CPU."""
    args = cli("train", dataset, "run", *TINY, "--epochs", 2, "--warmup-epochs", 1,
               "--log-every", 0, "--engine", engine,
               "--dump-weights", tmp_path / "weights-{rank}.npz")
    code, out = run_in_own_folders(engine, args, tmp_path)
    assert code == 0, out[-4000:]
    run0, run1 = tmp_path / "rank0" / "run", tmp_path / "rank1" / "run"
    assert (tmp_path / "rank1").is_dir()  # rank 1 did run there ...
    assert not run1.exists()  # ... and wrote nothing of the run
    config = json.loads((run0 / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch_size"] == 32
    # 180 train examples in 2 shards of 90, one per rank: 90 // 16 = 5 steps
    assert config["steps_per_epoch"] == 5
    hist = history(run0)
    assert [h["epoch"] for h in hist] == [1, 2]
    assert hist[1]["loss"] < hist[0]["loss"]
    # the LR scales with the 2 workers: lr_max x 2 after the warmup epoch, then the one
    # epoch after warmup decays to lr_final x 2
    assert [h["lr"] for h in hist] == pytest.approx([2 * LR_MAX, 2 * LR_MAX * 0.01], rel=1e-9)
    assert_same_weights(tmp_path / "weights-0.npz", tmp_path / "weights-1.npz")
    assert list((run0 / "checkpoints").glob("ckpt-10.index"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_np_2_self_launch_stops_both_ranks_on_a_signal_and_resumes(engine, dataset, tmp_path):
    run_dir, steps = tmp_path / "run", 15
    args = cli("train", dataset, run_dir, *TINY, "--epochs", 3, "--warmup-epochs", 1,
               "--steps-per-epoch", steps, "--log-every", 0, "--np", 2, "--engine", engine,
               "--dump-weights", tmp_path / "weights-{rank}.npz")
    code, out = run_until(args, lambda line: f"epoch 1/3 step 3/{steps}" in line,
                          lambda proc: proc.send_signal(signal.SIGUSR1))
    assert code == REQUEUE_EXIT_CODE, out[-4000:]
    st = status(run_dir)
    assert st["state"] == "preempted" and st["epoch"] == 0 and 3 <= st["step_in_epoch"] < steps
    assert "stop requested (stop file" in out
    assert not (run_dir / "stop-request").exists()  # consumed
    # both ranks stopped after the same step with the same weights
    assert_same_weights(tmp_path / "weights-0.npz", tmp_path / "weights-1.npz")

    again = run(args)
    assert again.returncode == 0, again.stdout[-4000:]
    step = st["step_in_epoch"]
    assert f"epoch 1: resuming at step {step}/{steps}" in again.stdout
    resumed = re.search(r"resumed from \S+: epoch (\d+), step (\d+), lr (\S+)", again.stdout)
    assert resumed and (int(resumed.group(1)), int(resumed.group(2))) == (1, step)
    # that step's LR of the 2-rank schedule (scaled by 2): warming up, a fraction into epoch 1
    assert float(resumed.group(3)) == pytest.approx(
        seed_lr(step / steps, 2 * LR_MAX, 1, 2), rel=1e-5)
    assert [h["epoch"] for h in history(run_dir)] == [1, 2, 3]
    assert status(run_dir)["global_step"] == 3 * steps
    assert_same_weights(tmp_path / "weights-0.npz", tmp_path / "weights-1.npz")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_np_2_signalled_during_startup_exits_75_and_the_rerun_trains(engine, dataset, tmp_path):
    run_dir = tmp_path / "run"
    args = cli("train", dataset, run_dir, *TINY, "--epochs", 2, "--warmup-epochs", 1,
               "--steps-per-epoch", 4, "--log-every", 0, "--np", 2, "--engine", engine)
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        time.sleep(3)  # the ranks have been started; they are importing TensorFlow
        os.kill(proc.pid, signal.SIGUSR1)
        out, _ = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == REQUEUE_EXIT_CODE, out[-4000:]
    assert "done:" not in out
    if (run_dir / "status.json").exists():
        assert status(run_dir)["state"] != "finished"
    again = run(args)
    assert again.returncode == 0, again.stdout[-4000:]
    assert [h["epoch"] for h in history(run_dir)] == [1, 2]


@pytest.mark.parametrize("engine", ENGINES)
def test_np_launcher_signalled_before_starting_the_ranks_starts_nothing(engine, tmp_path):
    with StopRequest(stop_signals(signal.SIGUSR1)) as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        code = launch.run_ranks(2, ["data", str(tmp_path / "run")], tmp_path / "run", stop,
                                engine)
    assert code == REQUEUE_EXIT_CODE
    assert not (tmp_path / "run").exists()  # nothing started, nothing written


@pytest.mark.parametrize("engine", ENGINES)
def test_self_launch_only_outside_a_launcher_and_what_it_starts(engine, monkeypatch):
    for key in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_NTASKS",
                "TF_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    assert launch.should_self_launch(2) and not launch.should_self_launch(1)
    # a rank of either engine's launcher does not start ranks of its own
    monkeypatch.setenv(*{"horovod": ("HOROVOD_RANK", "0"),
                         "tf": ("TF_CONFIG", launch.local_tf_configs(2)[0])}[engine])
    assert not launch.should_self_launch(2)
    children = launch.rank_children(engine, 2, ["data", "run", "--epochs", "3"])
    train = ["-m", "imnet64_cli.main", "train", "data", "run", "--epochs", "3"]
    if engine == "horovod":  # horovodrun, through imnet64's import filter, starts both ranks
        (child,) = children
        assert child.command[:3] == [sys.executable, "-m", "imnet64.cluster.horovodrun"]
        assert child.command[3:8] == ["--gloo", "-np", "2", "-H", "localhost:2"]
        assert child.command[-7:] == train and child.env == {}
        return
    # tf: one process per rank, each told the cluster and its place in it
    assert [c.command for c in children] == [[sys.executable, *train]] * 2
    configs = [json.loads(c.env["TF_CONFIG"]) for c in children]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in (0, 1)]
    workers = configs[0]["cluster"]["worker"]
    assert configs[1]["cluster"]["worker"] == workers and len(set(workers)) == 2
    assert all(re.fullmatch(r"localhost:\d+", w) for w in workers)


def test_a_failed_rank_ends_its_peers_and_gives_the_exit_code():
    """A tf rank that dies leaves its peers waiting in their next collective: the launcher
    ends them (SIGTERM) and exits with the failure's code; nothing is left running."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    failing = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    started = time.monotonic()
    assert launch.wait_all([sleeper, failing]) == 3
    assert sleeper.poll() == -signal.SIGTERM
    assert time.monotonic() - started < 60
    ok = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(2)]
    assert launch.wait_all(ok) == 0


def test_submit_passes_the_engine_to_train_sh(capsys):
    """`imnet64 submit train|pipeline --engine tf` sets IMNET64_ENGINE, which train.sh reads
    to pick its launcher line; anything else is a one-line error."""
    from imnet64_cli.main import main

    for command in ("train", "pipeline"):
        assert main(["submit", command, "--engine", "tf", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "export IMNET64_ENGINE=tf" in out
        assert "engine=${IMNET64_ENGINE:-horovod}" in out  # what train.sh reads
        assert 'tf) launch=(srun --mpi=none --distribution=block) ;;' in out
    assert main(["submit", "train", "--dry-run"]) == 0
    assert "export IMNET64_ENGINE" not in capsys.readouterr().out  # the template's default
    assert main(["submit", "train", "--engine", "mpi", "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: --engine 'mpi': choose horovod or tf\n", err
