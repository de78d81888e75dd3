"""The `imnet64 label` / `label-status` commands as a user runs them: real subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from imnet64.formats.label_parts import part_paths
from imnet64.pipeline.sample_images import write_sample

import pytest

IMNET64 = str(Path(sys.executable).with_name("imnet64"))
PROGRESS = re.compile(r"label 0/1: (\d+)/(\d+) images")


def imnet64(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full_env.update(env or {})
    return subprocess.run([IMNET64, *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_sample(root, 60, per_folder=25)
    return root


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["label", "{tmp}/missing", "{tmp}/out"], {}, "error: INPUT {tmp}/missing does not exist"),
        (["label", "{photos}", "{tmp}/out", "--shard-index", "3", "--num-shards", "2"], {},
         "error: shard index 3 is not in 0..1"),
        (["label", "{photos}", "{tmp}/out"],
         {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "2"},
         "error: shard index 5 is not in 0..1"),
        (["label", "{photos}", "{photos}/out"], {}, "error: OUT_DIR {photos}/out is inside INPUT"),
        (["label", "{tmp}/a.tar.gz", "{tmp}/out"], {}, "is a compressed archive"),
        (["label", "{photos}", "{tmp}/out", "--copy"], {}, "error: --copy only applies"),
        (["label-status", "{tmp}/nothing-here"], {}, "error: OUT_DIR {tmp}/nothing-here does"),
    ],
)
def test_cli_errors_are_one_line_and_non_zero(args, env, message, photos, tmp_path):
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz"):
        pass
    fill = {"tmp": tmp_path, "photos": photos}
    result = imnet64(*[a.format(**fill) for a in args], env=env)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message.format(**fill) in lines[0]
    assert not (photos / "out").exists()


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--num-shards", "0"], {}, "error: --num-shards must be at least 1 (got 0)"),
        (["--num-shards", "-3", "--shard-index", "0"], {},
         "error: --num-shards must be at least 1 (got -3)"),
        (["--shard-index", "-1"], {}, "error: shard index -1 is not in 0..0 (--shard-index -1)"),
        (["--shard-index", "2", "--num-shards", "2"], {},
         "error: shard index 2 is not in 0..1 (--shard-index 2, --num-shards 2)"),
        ([], {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "0"},
         "error: shard count 0 is not at least 1 (from SLURM_ARRAY_TASK_ID=0, "
         "SLURM_ARRAY_TASK_COUNT=0"),
        ([], {"SLURM_PROCID": "0", "SLURM_NTASKS": "0"},
         "error: shard count 0 is not at least 1 (from SLURM_PROCID=0, SLURM_NTASKS=0"),
        ([], {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "2",
              "SLURM_ARRAY_TASK_COUNT": "2"},
         "error: shard index -1 is not in 0..1 (from SLURM_ARRAY_TASK_ID=1, "
         "SLURM_ARRAY_TASK_MIN=2, SLURM_ARRAY_TASK_COUNT=2"),
        (["--num-shards", "2"], {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"},
         "error: shard index 3 is not in 0..1 (--num-shards 2; from SLURM_ARRAY_TASK_ID=3, "
         "SLURM_ARRAY_TASK_COUNT=4"),
    ],
)
def test_shard_numbers_out_of_range_are_refused(args, env, message, photos, tmp_path):
    # a teacher that does not exist: a run that went past the shard check would fail on it
    result = imnet64("label", photos, tmp_path / "out", "--teacher", tmp_path / "no-teacher",
                     *args, env=env)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not (tmp_path / "out").exists()


def test_out_dir_under_a_regular_file_fails_before_reading_inputs_or_the_teacher(photos,
                                                                              tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    # the outputs are checked first: before INPUT is read (an empty folder would be "no
    # image files") and before the teacher is loaded (this one does not exist)
    for source in (empty, photos):
        start = time.monotonic()
        result = imnet64("label", source, blocker / "out", "--teacher", tmp_path / "no-teacher")
        seconds = time.monotonic() - start
        assert result.returncode == 2
        lines = error_lines(result)
        assert lines == [f"error: cannot write label outputs to {blocker}/out/labels: "
                         f"{blocker} is a file, not a folder"], result.stderr
        assert seconds < 10  # the CLI starts in ~2 s; loading the teacher alone takes ~12
    # OUT_DIR or --export-folders being that file: the same one line (not click's usage text)
    for args, what in (([blocker], "label outputs"),
                       ([tmp_path / "out", "--export-folders", blocker], "--export-folders")):
        result = imnet64("label", photos, *args, "--teacher", tmp_path / "no-teacher")
        assert result.returncode == 2
        where = f"{blocker}/labels" if what == "label outputs" else f"{blocker}"
        assert error_lines(result) == [f"error: cannot write {what} to {where}: "
                                       f"{blocker} is a file, not a folder"], result.stderr
    assert blocker.read_text() == "not a folder"


def test_shard_comes_from_slurm_array_variables(photos, tmp_path):
    # --array=1-2: task ids 1 and 2, task 2 is shard 1 of 2. A teacher that does not exist
    # stops the run right after planning, with a one-line error, before any output.
    result = imnet64("label", photos, tmp_path / "out", "--teacher", tmp_path / "no-teacher",
                     env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1",
                          "SLURM_ARRAY_TASK_COUNT": "2"})
    assert result.returncode == 2
    assert f"shard 1/2: 30 of 60 inputs (folder {photos})" in result.stderr
    assert error_lines(result)[-1].startswith(f"error: teacher '{tmp_path / 'no-teacher'}'")
    assert not part_paths(tmp_path / "out", 1, 2).summary.exists()


@pytest.mark.slow
def test_kill_9_midway_then_rerun_gives_byte_identical_parts(photos, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["label", photos, killed, "--teacher", "offline", "--batch-size", "2",
            "--progress-every", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.Popen([IMNET64, *map(str, args)], stderr=subprocess.PIPE, text=True,
                            env=env)
    seen: list[tuple[int, int]] = []

    def watch() -> None:
        for line in proc.stderr:
            m = PROGRESS.search(line)
            if m:
                seen.append((int(m.group(1)), int(m.group(2))))
                if int(m.group(1)) >= 6:  # a few batches written: kill it right there
                    proc.send_signal(signal.SIGKILL)
                    break

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    watcher.join(10)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done, total = seen[-1]
    assert 6 <= done < total == 60
    paths = part_paths(killed, 0, 1)
    visible = sorted(p.name for p in paths.folder.iterdir() if not p.name.startswith("."))
    assert visible == []  # killed midway: no part file visible, only temporary ones
    assert paths.temp_files()
    status = imnet64("label-status", killed)
    assert status.returncode == 1 and "partial" in status.stdout

    rerun = imnet64(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "removed 2 temporary file(s)" in rerun.stderr
    assert paths.temp_files() == []
    uninterrupted = imnet64("label", photos, clean, "--teacher", "offline", "--batch-size", "2")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    other = part_paths(clean, 0, 1)
    # all three part files, the summary too (timings live in the .timing.json beside it)
    assert paths.timing.is_file() and other.timing.is_file()
    for a, b in ((paths.tfrecord, other.tfrecord), (paths.csv, other.csv),
                 (paths.summary, other.summary)):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert len(paths.csv.read_text().splitlines()) == 61

    status = imnet64("label-status", killed, "--num-shards", "1")
    assert status.returncode == 0 and "1/1 done" in status.stdout
    assert "60 inputs = 60 labeled + 0 rejected" in status.stdout
    # a finished shard is skipped (without loading TensorFlow or the teacher)
    stamp = paths.summary.stat().st_mtime_ns
    start = time.monotonic()
    again = imnet64(*args)
    assert again.returncode == 0 and "skipped" in again.stderr
    assert paths.summary.stat().st_mtime_ns == stamp
    assert time.monotonic() - start < 20
