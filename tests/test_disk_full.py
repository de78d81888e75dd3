"""A full disk and a read-only folder (issue 24, item 8), on a real 3 MB tmpfs: `train`,
`evaluate`, `export` and `shard-records` end with one `error:` line naming the folder and
the free space needed (or that it is read-only), exit 2, leave nothing that looks complete,
and the same command finishes once space is back.

Needs root (mount); skipped with the reason otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)

import pytest
from test_read_back import TRAIN_ARGS, cli_main, one_error_line, snapshot


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh 3 MB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int = 0) -> Path:
    """Fill the tmpfs but `leave` bytes; returns the filler (remove it to free the space)."""
    filler = mnt / "filler"
    free = shutil.disk_usage(mnt).free
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def read_only(mnt: Path) -> None:
    done = _mount("-o", "remount,ro", str(mnt))
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def dataset(read_back_dataset) -> Path:
    return read_back_dataset


@pytest.fixture(scope="module")
def base_run(read_back_run) -> Path:
    return read_back_run


def refused(argv: list, capsys, *expected: str) -> str:
    code = cli_main(argv)
    line = one_error_line(capsys.readouterr().err)
    assert code == 2, line
    for text in expected:
        assert text in line, line
    return line


def test_train_on_a_full_disk_then_resumes_when_space_returns(dataset, base_run, tmpfs,
                                                              capsys):
    run_dir = tmpfs / "run"
    filler = fill(tmpfs)
    refused(["train", dataset, run_dir, *TRAIN_ARGS], capsys,
            f"no space left in {run_dir}", "it needs about", "free some space and rerun")
    assert not list(run_dir.glob("checkpoints/ckpt-*.index"))  # nothing looks complete
    filler.unlink()
    assert cli_main(["train", dataset, run_dir, *TRAIN_ARGS]) == 0
    capsys.readouterr()
    # the same run as without the full disk: same final checkpoint bytes
    name = sorted(p.name for p in (base_run / "checkpoints").glob("ckpt-*.data-*"))[-1]
    assert (run_dir / "checkpoints" / name).read_bytes() == \
        (base_run / "checkpoints" / name).read_bytes()
    assert not list(run_dir.rglob("*_temp")) and not list(run_dir.rglob(".*.tmp"))


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_evaluate_and_export_on_a_full_disk(command, base_run, dataset, tmpfs, capsys):
    run_dir = tmpfs / "run"
    shutil.copytree(base_run, run_dir)
    out = tmpfs / "model"
    argv = ["evaluate", run_dir] if command == "evaluate" else ["export", run_dir, out]
    filler = fill(tmpfs)
    before = snapshot(run_dir)
    folder = run_dir if command == "evaluate" else tmpfs
    refused(argv, capsys, f"no space left in {folder}", "it needs about")
    assert snapshot(run_dir) == before and not out.exists()
    assert not [p for p in tmpfs.iterdir() if p.name.startswith(".model")]
    filler.unlink()
    assert cli_main(argv) == 0
    capsys.readouterr()


def test_shard_records_on_a_full_disk_then_resumes(tmp_path, tmpfs, capsys):
    from imnet64.pipeline.sample_images import write_sample

    write_sample(tmp_path / "imgs", 24, per_folder=12)
    out = tmpfs / "ds"
    filler = fill(tmpfs, leave=8 << 10)
    refused(["shard-records", tmp_path / "imgs", out], capsys,
            f"no space left in {out}", "it needs about")
    assert not (out / "dataset.json").exists()
    filler.unlink()
    assert cli_main(["shard-records", tmp_path / "imgs", out]) == 0
    assert cli_main(["inspect", out, "--verify"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "shard-records"])
def test_a_read_only_output_folder_is_one_line(command, dataset, base_run, tmp_path, tmpfs,
                                               capsys):
    run_dir = tmpfs / "run"
    shutil.copytree(base_run, run_dir)
    (tmpfs / "ds").mkdir()
    read_only(tmpfs)
    before = snapshot(tmpfs)
    argv = {"train": ["train", dataset, run_dir, *TRAIN_ARGS],
            "evaluate": ["evaluate", run_dir],
            "export": ["export", run_dir, tmpfs / "model"],
            "shard-records": ["shard-records", dataset.parent / "nonexistent", tmpfs / "ds"],
            }[command]
    if command == "shard-records":
        from imnet64.pipeline.sample_images import write_sample

        write_sample(tmp_path / "imgs", 24, per_folder=12)
        argv[1] = tmp_path / "imgs"
    refused(argv, capsys, "read-only file system")
    assert snapshot(tmpfs) == before


def _no_inode_left(mnt: Path) -> list[Path]:
    """Use up the tmpfs's inodes (mounted with few): no file or folder can be made, as on a
    filesystem out of inodes; returns the fillers (remove them to make room)."""
    fillers = []
    while True:
        try:
            fillers.append(mnt / f"inode-{len(fillers)}")
            fillers[-1].touch()
        except OSError:
            return fillers[:-1]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no-inode-at-start", "full-from-the-start", "full-mid-way"])
def test_label_on_a_full_disk_then_the_rerun_labels_as_an_uninterrupted_run(
        case, tmp_path, capsys, offline_teacher_dir):
    """The 36 photos' part needs about 260 KB. Out of inodes, OUT_DIR's check refuses before
    the teacher is loaded; with no byte (or 128 KB) free the shard starts, and the disk is
    (becomes) full while its part is written."""
    from imnet64.formats.label_parts import part_paths
    from imnet64.formats.label_status import label_status
    from imnet64.pipeline.sample_images import write_sample

    photos = tmp_path / "photos"
    write_sample(photos, 36, per_folder=12)
    argv = ["label", photos, None, "--teacher", offline_teacher_dir, "--batch-size", "8"]
    # the uninterrupted run, on a disk with room
    assert cli_main([a if a is not None else tmp_path / "whole" for a in argv]) == 0
    capsys.readouterr()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=3m,nr_inodes=64", "tmpfs", str(mnt))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        out = mnt / "out"
        fillers = _no_inode_left(mnt) if case == "no-inode-at-start" else \
            [fill(mnt, leave=0 if case == "full-from-the-start" else 128 << 10)]
        assert cli_main([a if a is not None else out for a in argv]) == 2
        err = capsys.readouterr().err
        line = one_error_line(err)
        for text in ("no space left in ", "it needs about 259.", "free some space and rerun"):
            assert text in line, line
        assert str(out) in line, line
        assert ("but no inode" in line) == (case == "no-inode-at-start"), line
        # out of inodes: refused before the teacher is loaded; else the labeling had begun
        assert ("teacher: " in err) == (case != "no-inode-at-start"), err
        # nothing that looks complete: no summary (the done marker), no final part file
        paths = part_paths(out, 0, 1)
        assert not paths.summary.exists() and not paths.tfrecord.exists(), line
        if out.exists():
            assert not label_status(out, 1).complete
        for filler in fillers:
            filler.unlink()
        assert cli_main([a if a is not None else out for a in argv]) == 0
        capsys.readouterr()
        assert label_status(out, 1).complete
        whole = part_paths(tmp_path / "whole", 0, 1)
        assert paths.csv.read_bytes() == whole.csv.read_bytes()
        assert paths.tfrecord.read_bytes() == whole.tfrecord.read_bytes()
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
