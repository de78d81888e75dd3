"""`imnet64 train` when things go wrong (issue 13): damaged checkpoints, another dataset in the
same RUN_DIR, stop signals at any moment, truthful status.json, one-line errors.

Most cases train a tiny model in this process (a few seconds); the signal cases run real
`imnet64 train` processes and send them real signals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster.preemption import REQUEUE_EXIT_CODE
from imnet64.errors import UserError

import pytest
from tiny_dataset import build_tiny_dataset
from train_helpers import TINY, cli, env, history, run, run_until, status

# a run of 4 epochs x 2 steps keeps ckpt-4, ckpt-6, ckpt-8 (and the best one apart)
OPTIONS = dict(widths=(4, 8, 8), repeats=(1, 1, 1), epochs=4, warmup_epochs=1, batch_size=8,
               lr_max=0.01, steps_per_epoch=2, shuffle=False, log_every=0)


def config(dataset: Path, run_dir: Path, **overrides):
    from imnet64.train.loop import TrainConfig

    return TrainConfig(run_dir=str(run_dir), dataset=str(dataset), **{**OPTIONS, **overrides})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=24, shards=1)


@pytest.fixture(scope="module")
def base_run(dataset, tmp_path_factory) -> Path:
    """A finished 4-epoch run (copied by each test that damages it)."""
    from imnet64.train.loop import train

    run_dir = tmp_path_factory.mktemp("base") / "run"
    result = train(config(dataset, run_dir))
    assert result.state == "finished" and result.global_step == 8
    return run_dir


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(base_run, run_dir)
    return run_dir


@pytest.fixture
def logs():
    """imnet64's log lines of the test (the CLI's logging setup may stop propagation)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("imnet64")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def ckpt(run_dir: Path, step: int, best: bool = False) -> Path:
    folder = run_dir / "checkpoints" / ("best" if best else "")
    return folder / f"ckpt-{step}"


def files_of(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(prefix.name + ".*"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def contents(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in folder.rglob("*") if p.is_file()]


# ---- damage ---------------------------------------------------------------------------------


def garbage_state(run_dir: Path) -> None:
    (run_dir / "checkpoints" / "checkpoint").write_text("this is not a checkpoint state {{\n")


def truncate_index(prefix: Path) -> None:
    index = Path(f"{prefix}.index")
    index.write_bytes(index.read_bytes()[:50])


def flip_data(prefix: Path) -> None:
    data = next(prefix.parent.glob(prefix.name + ".data-*"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))


def remove_data(prefix: Path) -> None:
    for data in prefix.parent.glob(prefix.name + ".data-*"):
        data.unlink()


DAMAGE = {"index-truncated": truncate_index, "data-bit-flipped": flip_data,
          "data-missing": remove_data}


def damage_newest(run_dir: Path, how: str) -> None:
    """ckpt-8 damaged, and its copy under best/ too if the best one is that step."""
    for prefix in (ckpt(run_dir, 8), ckpt(run_dir, 8, best=True)):
        if files_of(prefix):
            DAMAGE[how](prefix)


# ---- (2) damaged checkpoints ------------------------------------------------------------------


def test_garbage_state_file_resumes_from_the_newest_checkpoint_on_disk(
        dataset, run_copy, logs):
    from imnet64.train.loop import train

    before = {p.name: p.read_bytes() for p in files_of(ckpt(run_copy, 8))}
    garbage_state(run_copy)
    result = train(config(dataset, run_copy))
    assert result.global_step == 8 and result.epoch == 4  # not started over
    assert any(line.startswith("resumed from ") and line.split()[2].endswith("ckpt-8:")
               for line in logs), logs
    assert {p.name: p.read_bytes() for p in files_of(ckpt(run_copy, 8))} == before
    assert [h["epoch"] for h in history(run_copy)] == [1, 2, 3, 4]
    # the damaged state file is kept for a look, not thrown away
    assert b"this is not a checkpoint state {{\n" in contents(run_copy / "checkpoints")


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_newest_checkpoint_resumes_from_the_previous_one(
        dataset, run_copy, logs, how):
    from imnet64.train.loop import train

    damage_newest(run_copy, how)
    damaged = [p.read_bytes() for p in files_of(ckpt(run_copy, 8)) + files_of(
        ckpt(run_copy, 8, best=True))]
    result = train(config(dataset, run_copy))
    assert result.state == "finished" and result.global_step == 8
    resumed = [line for line in logs if line.startswith("resumed from ")]
    assert len(resumed) == 1 and "ckpt-6: epoch 4, step 0" in resumed[0], logs
    skipped = [line for line in logs if line.startswith("skipped checkpoint")]
    assert skipped and all("ckpt-8" in line and "\n" not in line for line in skipped), logs
    # epoch 4 was trained again and written as a new ckpt-8 ...
    assert [h["epoch"] for h in history(run_copy)] == [1, 2, 3, 4]
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(ckpt(run_copy, 8)))
    assert reader.get_tensor("state/global_step/.ATTRIBUTES/VARIABLE_VALUE") == 8
    # ... while every byte of the damaged one is still on disk (set aside, not overwritten)
    kept = contents(run_copy / "checkpoints")
    assert damaged and all(d in kept for d in damaged)


def test_all_checkpoints_damaged_is_a_one_line_error_and_touches_nothing(
        dataset, run_copy, logs):
    from imnet64.train.loop import train

    for prefix in sorted((run_copy / "checkpoints").rglob("ckpt-*.index")):
        flip_data(prefix.with_suffix(""))
    before = snapshot(run_copy / "checkpoints")
    with pytest.raises(UserError, match="no checkpoint .* restores") as e:
        train(config(dataset, run_copy))
    assert "\n" not in str(e.value) and "--restart-if-damaged" in str(e.value)
    assert snapshot(run_copy / "checkpoints") == before
    assert status(run_copy)["state"] == "failed"


def test_all_damaged_from_the_command_line_exits_non_zero_with_one_line(dataset, run_copy):
    for prefix in sorted((run_copy / "checkpoints").rglob("ckpt-*.index")):
        truncate_index(prefix.with_suffix(""))
    before = snapshot(run_copy / "checkpoints")
    args = ["--widths", "4,8,8", "--repeats", "1,1,1", "--epochs", 4, "--warmup-epochs", 1,
            "--batch-size", 8, "--lr-max", 0.01, "--steps-per-epoch", 2, "--no-shuffle",
            "--log-every", 0]
    result = run(cli("train", dataset, run_copy, *args), merge_stderr=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "ckpt-8" in errors[0], result.stderr[-3000:]
    assert snapshot(run_copy / "checkpoints") == before

    # asked for explicitly: a fresh start, with the damaged files kept aside
    again = run(cli("train", dataset, run_copy, *args, "--restart-if-damaged"),
                merge_stderr=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "starting over" in again.stderr
    kept = contents(run_copy / "checkpoints")
    assert all(data in kept for name, data in before.items() if "ckpt-" in name)
    assert status(run_copy)["state"] == "finished"


def test_damaged_checkpoints_are_skipped_by_evaluate_and_export(run_copy, logs):
    from imnet64.train.run_dir import load_trained_run

    garbage_state(run_copy)
    (run_copy / "checkpoints" / "best" / "checkpoint").write_text("garbage\n")
    # found from the files on disk, not from the (garbage) state files
    assert load_trained_run(run_copy, "latest").checkpoint.endswith("ckpt-8")
    assert "/best/ckpt-" in load_trained_run(run_copy, "best").checkpoint
    flip_data(ckpt(run_copy, 8))
    assert load_trained_run(run_copy, "latest").checkpoint.endswith("ckpt-6")
    assert any(line.startswith("skipped checkpoint") and "ckpt-8" in line for line in logs)
    for prefix in (run_copy / "checkpoints" / "best").glob("ckpt-*.index"):
        flip_data(prefix.with_suffix(""))
    with pytest.raises(UserError, match="damaged"):
        load_trained_run(run_copy, "best")


# ---- (3) another dataset in the same RUN_DIR --------------------------------------------------


def test_resume_with_other_class_names_is_refused(dataset, run_copy, tmp_path):
    from imnet64.train.loop import train

    other = build_tiny_dataset(tmp_path / "other", per_class=24, shards=1,
                               classes=("chelsea", "coffee", "astronaut", "grace_hopper"))
    classes_before = (run_copy / "classes.json").read_bytes()
    with pytest.raises(UserError, match="class names"):
        train(config(other, run_copy))
    assert (run_copy / "classes.json").read_bytes() == classes_before


def test_resume_with_another_dataset_of_the_same_classes_is_refused(dataset, run_copy,
                                                                    tmp_path):
    from imnet64.train.loop import train

    # the same class names, other examples (another split seed): other shard contents
    other = build_tiny_dataset(tmp_path / "other", per_class=24, shards=1, seed=1)
    with pytest.raises(UserError, match="another dataset"):
        train(config(other, run_copy))
    # the same dataset moved elsewhere is the same dataset: resumes
    moved = tmp_path / "moved"
    shutil.copytree(dataset, moved)
    assert train(config(moved, run_copy)).global_step == 8


# ---- (6), (7) stop signals and status.json ------------------------------------------------------


def _catches(pid: int, sig: signal.Signals) -> bool:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line.split()[1] for line in text.splitlines()
                    if line.startswith("SigCgt:")), 16)
    return bool(mask >> (sig - 1) & 1)


def signal_during_startup(args: list[str], sig: signal.Signals = signal.SIGUSR1,
                          wait: float = 1.5) -> tuple[int, str]:
    """Start `args` and send `sig` as soon as the process handles it, or after `wait`
    seconds at the latest (TensorFlow's import alone takes longer: still start-up)."""
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not _catches(proc.pid, sig):
            time.sleep(0.02)
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out


CLI_OPTIONS = [*TINY, "--epochs", 3, "--warmup-epochs", 1, "--steps-per-epoch", 10,
               "--log-every", 0]


def test_a_stop_signal_during_startup_exits_75_without_training(dataset, tmp_path):
    run_dir = tmp_path / "run"
    code, out = signal_during_startup(cli("train", dataset, run_dir, *CLI_OPTIONS))
    assert code == REQUEUE_EXIT_CODE, out[-3000:]
    assert "epoch 1/3" not in out  # nothing trained ...
    assert not list(run_dir.glob("checkpoints/ckpt-*"))  # ... so nothing to checkpoint
    st = status(run_dir)
    assert st["state"] == "preempted" and st["exit_code"] == 75
    assert st["reason"] == "signal SIGUSR1" and st["checkpoint"] is None


def test_a_stop_signal_during_a_resumed_startup_keeps_the_checkpoint(dataset, tmp_path):
    run_dir = tmp_path / "run"
    stopped, out = run_until(cli("train", dataset, run_dir, *CLI_OPTIONS),
                             lambda line: "epoch 1/3 done" in line,
                             lambda proc: proc.send_signal(signal.SIGUSR1))
    assert stopped == REQUEUE_EXIT_CODE, out[-3000:]
    checkpoint = status(run_dir)["checkpoint"]
    assert checkpoint and Path(checkpoint + ".index").is_file()
    before = snapshot(run_dir / "checkpoints")
    code, out = signal_during_startup(cli("train", dataset, run_dir, *CLI_OPTIONS))
    assert code == REQUEUE_EXIT_CODE, out[-3000:]
    assert "epoch 2/3 step" not in out
    assert snapshot(run_dir / "checkpoints") == before  # not rewritten
    st = status(run_dir)
    assert st["state"] == "preempted" and st["checkpoint"] == checkpoint
    assert f"resumed from {checkpoint}" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_checkpoint_and_say_stopped(dataset, tmp_path, sig):
    run_dir = tmp_path / "run"
    args = cli("train", dataset, run_dir, *CLI_OPTIONS)
    code, out = run_until(args, lambda line: "epoch 1/3 step 3/10" in line,
                          lambda proc: proc.send_signal(sig))
    assert code == REQUEUE_EXIT_CODE, out[-3000:]
    assert "Traceback" not in out
    st = status(run_dir)
    assert st["state"] == "stopped" and st["reason"] == f"signal {sig.name}"
    assert st["exit_code"] == 75 and 3 <= st["step_in_epoch"] < 10
    assert Path(st["checkpoint"] + ".index").is_file()


def test_a_crash_is_recorded_as_failed_with_its_reason(dataset, tmp_path):
    from imnet64.train.loop import train

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError):
        train(config(dataset, tmp_path / "run", epochs=2,
                     dump_weights=str(tmp_path / "file" / "weights.npz")))
    st = status(tmp_path / "run")
    assert st["state"] == "failed" and st["exit_code"] == 1
    kind = st["error"].split(":")[0]
    assert kind in ("FileExistsError", "NotADirectoryError") and "\n" not in st["error"]


# ---- (8) one-line errors -----------------------------------------------------------------------


def test_a_one_class_dataset_is_a_user_error(tmp_path):
    from imnet64.train.loop import train

    one = build_tiny_dataset(tmp_path / "one", per_class=24, shards=1, classes=("chelsea",))
    with pytest.raises(UserError, match="at least 2 classes"):
        train(config(one, tmp_path / "run"))


def test_a_truncated_shard_is_named_before_training(dataset, tmp_path):
    from imnet64.train.loop import train

    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    shard = broken / "val-00000-of-00001.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(UserError, match=str(shard)) as e:
        train(config(broken, tmp_path / "run"))
    assert "bytes" in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.glob("run/checkpoints/ckpt-*"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_corrupt_shard_is_named_when_reading_it_fails(dataset, tmp_path, split):
    from imnet64.train.loop import train

    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    shard = broken / f"{split}-00000-of-00001.tfrecord"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # same size: only reading it finds out
    shard.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=str(shard)) as e:
        # shuffled: the first batch fills the shuffle buffer from the whole train shard
        train(config(broken, tmp_path / "run", shuffle=True))
    assert "sha256" in str(e.value) and "\n" not in str(e.value)
    st = status(tmp_path / "run")
    assert st["state"] == "failed" and str(shard) in st["error"]


# ---- (10) option names in config errors ---------------------------------------------------------


@pytest.mark.parametrize("bad, option", [
    (dict(epochs=1, warmup_epochs=5.0), "--warmup-epochs"),
    (dict(epochs=0), "--epochs"),
    (dict(batch_size=0), "--batch-size"),
    (dict(precision="fp8"), "--precision"),
    (dict(steps_per_epoch=0), "--steps-per-epoch"),
    (dict(arch="vgg"), "--arch"),
    (dict(widths=(8, 8)), "--widths"),
    (dict(repeats=(0, 1, 1)), "--repeats"),
    (dict(signal="NOPE"), "--signal"),
    (dict(lr_max=0.0), "--lr-max"),
    (dict(init_scale=-1.0), "--lr-init-scale"),
    (dict(final_scale=-1.0), "--lr-final-scale"),
    (dict(keep_checkpoints=0), "--keep-checkpoints"),
    (dict(checkpoint_every=-1), "--checkpoint-every"),
    (dict(log_every=-1.0), "--log-every"),
    (dict(peak_flops=0.0), "--peak-flops"),
])
def test_config_errors_name_the_option_that_fixes_them(dataset, tmp_path, bad, option):
    from imnet64.train.loop import train

    with pytest.raises(UserError) as e:
        train(config(dataset, tmp_path / "run", **bad))
    assert option in str(e.value)
    assert not (tmp_path / "run").exists()


def test_too_few_epochs_for_the_default_warmup_names_the_option_on_the_command_line(
        dataset, tmp_path, capsys):
    from imnet64_cli.main import main

    logger = logging.getLogger("imnet64")
    handlers, propagate = list(logger.handlers), logger.propagate
    try:
        assert main(["train", str(dataset), str(tmp_path / "run"), "--epochs", "1"]) == 2
    finally:  # the command sets up logging to this test's captured stderr: undo it
        logger.handlers[:], logger.propagate = handlers, propagate
    err = capsys.readouterr().err
    assert err.startswith("error: --warmup-epochs") and err.count("\n") == 1, err
