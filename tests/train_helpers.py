"""Helpers for the training tests: run `imnet64 train` as real processes, watch their logs,
signal or kill them at a chosen moment, and read what they left behind."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

# A tiny encoder so a CPU epoch takes a second or two; the trainer is the real one.
TINY = ["--widths", "8,16,32", "--repeats", "1,1,1", "--batch-size", "16", "--lr-max", "0.01"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "imnet64_cli.main", *map(str, args)]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONUNBUFFERED"] = "1"
    return e


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the process and everything it started (its own session: horovodrun, ranks)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run(args: list[str], cwd: Path | None = None, timeout: float = 600,
        merge_stderr: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(args, cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s:\n{(out or '')[-3000:]}") from None
    finally:
        _kill_tree(proc)  # nothing may outlive a test
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run_until(args: list[str], when: Callable[[str], bool], action: Callable[[subprocess.Popen],
              None], timeout: float = 600) -> tuple[int, str]:
    """Start `args`, call `action(proc)` on the first output line for which `when(line)`,
    then wait. Returns (exit code, whole output)."""
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    lines, fired = [], False
    assert proc.stdout is not None
    # a watchdog: a hung run is killed (with its children) instead of hanging the suite
    watchdog = threading.Timer(timeout, _kill_tree, [proc])
    watchdog.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if not fired and when(line):
                action(proc)
                fired = True
        code = proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        _kill_tree(proc)
    out = "".join(lines)
    assert fired, f"the moment never came:\n{out[-3000:]}"
    return code, out


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "history.json").read_text())["epochs"]


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=0, atol=atol, err_msg=k)


def seed_lr(epoch, lr_max, init_epochs, final_epochs, init_scale=0.01, final_scale=0.01):
    """The seed notebook's lr_schedule with its constants as arguments."""
    lr_init, lr_final = lr_max * init_scale, lr_max * final_scale
    if epoch < init_epochs:
        return (lr_max - lr_init) * (float(epoch) / init_epochs) + lr_init
    return (lr_max - lr_final) * max(0.0, math.cos(
        ((float(epoch) - init_epochs) / (final_epochs - 1.0)) * (math.pi / 2.0))) + lr_final


SIX_CLASSES = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "grace_hopper")


def train_in_process(dataset: Path, run_dir: Path, **overrides):
    """A tiny real training run inside the test process (TensorFlow already loaded)."""
    from imnet64.train.loop import TrainConfig, train

    options = dict(run_dir=str(run_dir), dataset=str(dataset), widths=(8, 16, 16),
                   repeats=(1, 1, 1), epochs=3, warmup_epochs=1, batch_size=8, lr_max=0.01,
                   log_every=0)
    options.update(overrides)
    result = train(TrainConfig(**options))
    assert result.state == "finished"
    return result


def run_in_own_folders(engine: str, args: list[str], cwd: Path) -> tuple[int, str]:
    """`args` as 2 ranks started the engine's way, rank i in cwd/rank<i> (as on nodes without
    a shared file system). Returns (exit code, output)."""
    from imnet64.cluster.launch import local_tf_configs

    if engine == "horovod":
        inner = " ".join(shlex.quote(str(a)) for a in args)
        script = f"mkdir -p rank$HOROVOD_RANK && cd rank$HOROVOD_RANK && exec {inner}"
        done = run([str(Path(sys.executable).with_name("horovodrun")), "--gloo", "-np", "2",
                    "-H", "localhost:2", "sh", "-c", script], cwd=cwd, timeout=900)
        return done.returncode, done.stdout
    procs = []
    for rank, config in enumerate(local_tf_configs(2)):
        (cwd / f"rank{rank}").mkdir()
        procs.append(subprocess.Popen(
            args, cwd=cwd / f"rank{rank}", env={**env(), "TF_CONFIG": config},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True))
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
    return max(abs(p.returncode) for p in procs), "".join(outs)
