"""Tampering between stages (issue 24, items 9 and 11): dataset.json and label summaries
changed by hand, shards flipped or deleted before `evaluate`. Each reader ends with one
`error:` line naming the file and what is wrong, exit 2 (inspect --verify: non-zero), and
every file byte-identical after.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)

import pytest
from records_support import sample, write_label_out_dir
from test_read_back import TRAIN_ARGS, cli_main, one_error_line, snapshot


@pytest.fixture(scope="module")
def dataset(read_back_dataset) -> Path:
    return read_back_dataset


@pytest.fixture(scope="module")
def base_run(read_back_run) -> Path:
    return read_back_run


@pytest.fixture
def copies(dataset, base_run, tmp_path) -> tuple[Path, Path]:
    """A copy of the dataset and of a run trained on it (config.json names the copy)."""
    ds, run = tmp_path / "ds", tmp_path / "run"
    shutil.copytree(dataset, ds)
    shutil.copytree(base_run, run)
    config = json.loads((run / "config.json").read_text())
    config["dataset"] = str(ds.resolve())
    (run / "config.json").write_text(json.dumps(config))
    return ds, run


def manifest_edit(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def plant(ds: Path) -> None:
        m = json.loads((ds / "dataset.json").read_text())
        change(m)
        (ds / "dataset.json").write_text(json.dumps(m))
    return plant


def drop_class(m: dict) -> None:
    m["classes"] = m["classes"][:-1]


def drop_class_and_counts(m: dict) -> None:
    m["classes"] = m["classes"][:-1]
    for s in m["splits"].values():
        s["class_counts"] = s["class_counts"][:-1]


def flip_shard(split: str) -> Callable[[Path], None]:
    def plant(ds: Path) -> None:
        shard = ds / f"{split}-00000-of-00001.tfrecord"
        raw = bytearray(shard.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        shard.write_bytes(bytes(raw))
    return plant


def delete_shard(split: str) -> Callable[[Path], None]:
    return lambda ds: (ds / f"{split}-00000-of-00001.tfrecord").unlink()


# (case, damage to the dataset, commands, what the error line says)
DATASET_CASES = [
    ("classes-replaced-by-strings",
     manifest_edit(lambda m: m.update(classes=["a", "b", "c", "d"])),
     ("train", "evaluate", "inspect"), "dataset.json is damaged: classes[0] should be an object"),
    ("class-name-a-number",
     manifest_edit(lambda m: m["classes"][1].update(name=5)),
     ("train", "evaluate", "inspect"), "classes[1].name should be a string"),
    ("class-removed", manifest_edit(drop_class),
     ("train", "evaluate", "inspect", "verify"), "class_counts has 4 counts for 3 classes"),
    ("class-removed-with-its-counts", manifest_edit(drop_class_and_counts),
     ("verify",), "labels up to 3 for 3 classes"),
    ("class-ids-out-of-order",
     manifest_edit(lambda m: m["classes"][0].update(id=3)),
     ("train", "evaluate", "inspect"), "class ids must be 0..3 in order"),
    ("splits-a-list", manifest_edit(lambda m: m.update(splits=[])),
     ("train", "evaluate", "inspect"), "splits should be an object"),
    ("shard-count-a-string",
     manifest_edit(lambda m: m["splits"]["val"]["shards"][0].update(examples="12")),
     ("train", "evaluate", "inspect"), "splits.val.shards[0].examples should be an integer"),
    ("shard-outside-the-dataset",
     manifest_edit(lambda m: m["splits"]["val"]["shards"][0].update(file="../x.tfrecord")),
     ("train", "evaluate", "inspect"), "is not a file name"),
    ("manifest-garbage", lambda ds: (ds / "dataset.json").write_bytes(b"{]"),
     ("train", "evaluate", "inspect"), "dataset.json is damaged: not valid JSON"),
    ("manifest-a-folder",
     lambda ds: ((ds / "dataset.json").unlink(), (ds / "dataset.json").mkdir()),
     ("train", "evaluate", "inspect"), "dataset.json should be a file but is a folder"),
    ("val-shard-flipped", flip_shard("val"), ("evaluate",),
     "val-00000-of-00001.tfrecord is damaged (its sha256 differs"),
    ("val-shard-deleted", delete_shard("val"), ("evaluate",),
     "val-00000-of-00001.tfrecord cannot be read"),
]


def _argv(command: str, ds: Path, run: Path) -> list:
    return {"train": ["train", ds, run, *TRAIN_ARGS],
            "evaluate": ["evaluate", run],
            "inspect": ["inspect", ds],
            "verify": ["inspect", ds, "--verify"]}[command]


@pytest.mark.parametrize("case, damage, commands, message", DATASET_CASES,
                         ids=[c[0] for c in DATASET_CASES])
def test_a_tampered_dataset_is_one_line_and_nothing_changes(case, damage, commands, message,
                                                            copies, tmp_path, capsys):
    ds, run = copies
    damage(ds)
    before = snapshot(tmp_path)
    for command in commands:
        code = cli_main(_argv(command, ds, run))
        captured = capsys.readouterr()
        if command == "verify" and code == 1:  # verify's own problem list, one per line
            assert message in captured.out + captured.err, captured
        else:
            line = one_error_line(captured.err)
            assert code == 2, (command, line)
            assert message in line, (command, line)
        assert snapshot(tmp_path) == before, command


# ---- label summaries ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labeled(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("labeled")
    root, files = sample(tmp, 12)
    write_label_out_dir(tmp / "out", root, files, [(i % 3 + 1, 0.9) for i in range(12)])
    return root, tmp / "out"


def summary_edit(change: Callable[[dict], None], name: str = "part-00000-of-00002.json"):
    def plant(out: Path) -> None:
        path = out / "labels" / name
        d = json.loads(path.read_text())
        change(d)
        path.write_text(json.dumps(d))
    return plant


def timing_garbage(out: Path) -> None:
    (out / "labels" / "part-00000-of-00002.timing.json").write_bytes(b"[1, 2")


SUMMARY_CASES = [
    ("files-a-string", summary_edit(lambda d: d.update(files="part.tfrecord")),
     "part-00000-of-00002.json is damaged: files should be an object"),
    ("labeled-a-string", summary_edit(lambda d: d.update(labeled="6")),
     "labeled should be an integer"),
    ("part-bytes-a-string", summary_edit(lambda d: d["files"]["tfrecord"].update(bytes="1")),
     "files.tfrecord.bytes should be an integer"),
    ("rejects-an-object", summary_edit(lambda d: d.update(rejects={})),
     "rejects should be a list"),
    ("teacher-missing", summary_edit(lambda d: d.pop("teacher")), "teacher is missing"),
    ("summary-garbage",
     lambda out: (out / "labels" / "part-00000-of-00002.json").write_bytes(b"\x00garbage"),
     "part-00000-of-00002.json is damaged: not valid JSON"),
    ("summary-a-list",
     lambda out: (out / "labels" / "part-00000-of-00002.json").write_bytes(b"[]"),
     "it should be an object, not a list"),
    ("timing-garbage", timing_garbage, "part-00000-of-00002.timing.json is damaged"),
]


@pytest.mark.parametrize("case, damage, message", SUMMARY_CASES,
                         ids=[c[0] for c in SUMMARY_CASES])
def test_a_damaged_label_summary_is_one_line_and_nothing_changes(
        case, damage, message, labeled, tmp_path, capsys):
    root, base = labeled
    out = tmp_path / "out"
    shutil.copytree(base, out)
    damage(out)
    before = snapshot(tmp_path, root)
    # shard-records refuses, naming the file
    code = cli_main(["shard-records", out, tmp_path / "ds"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and message in line, line
    # label-status shows the shard as not done, with the reason, and no traceback
    code = cli_main(["label-status", out, "--num-shards", "2"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and message in captured.out + captured.err
    assert code != 0
    # label (no --force) does not relabel over it: it says what is wrong and how to redo it
    code = cli_main(["label", root, out, "--num-shards", "2", "--shard-index", "0"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and message in line and "--force" in line, line
    assert snapshot(tmp_path, root) == before


@pytest.mark.parametrize("old, new, message", [
    (b"0.900000", b"0.9x0000", "line 2: could not convert string to float"),
    (b"path,label", b"name,label", "its header is not path,label,class_name,confidence"),
])
def test_a_damaged_part_csv_is_one_line_and_nothing_changes(old, new, message, labeled,
                                                            tmp_path, capsys):
    """Same size (label-status still calls the shard done): `label --export-folders` reads
    the CSV back and names the line that is wrong."""
    root, base = labeled
    out = tmp_path / "out"
    shutil.copytree(base, out)
    csv_path = out / "labels" / "part-00000-of-00002.csv"
    csv_path.write_bytes(csv_path.read_bytes().replace(old, new, 1))
    before = snapshot(tmp_path, root)
    code = cli_main(["label", root, out, "--num-shards", "2", "--shard-index", "0",
                     "--export-folders", tmp_path / "classes"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and f"{csv_path} is damaged: {message}" in line, line
    # (label's up-front writability probe makes the --export-folders folder, left empty)
    assert not list((tmp_path / "classes").iterdir())
    (tmp_path / "classes").rmdir()
    assert snapshot(tmp_path, root) == before
