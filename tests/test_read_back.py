"""Every RUN_DIR file imnet64 reads back, damaged (issue 24, item 1): `train` (resume),
`evaluate` and `export` each end with one `error:` line naming the file and what is wrong,
exit 2, and every file of the run and the dataset byte-identical after.

One tiny run is trained once for the module; each case plants one damage in a copy of it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.errors import UserError
from imnet64.formats import read_back

import pytest
from read_back_support import TRAIN_ARGS


def cli_main(argv: list[str]) -> int:
    from imnet64_cli.main import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def dataset(read_back_dataset) -> Path:
    return read_back_dataset


@pytest.fixture(scope="module")
def base_run(read_back_run) -> Path:
    return read_back_run


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(base_run, run_dir)
    return run_dir


def snapshot(*folders: Path) -> dict[str, bytes | None]:
    """Every path under the folders: a file's bytes, None for a folder."""
    out: dict[str, bytes | None] = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            out[str(p)] = p.read_bytes() if p.is_file() else None
    return out


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


# ---- how each file is damaged ------------------------------------------------------------


def put(rel: str, data: bytes) -> Callable[[Path], None]:
    def plant(run_dir: Path) -> None:
        (run_dir / rel).write_bytes(data)
    return plant


def edit(rel: str, change: Callable[[object], object]) -> Callable[[Path], None]:
    def plant(run_dir: Path) -> None:
        path = run_dir / rel
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return plant


def without(key: str):
    return lambda d: {k: v for k, v in d.items() if k != key}


def with_(key: str, value):
    return lambda d: {**d, key: value}


def file_at(rel: str) -> Callable[[Path], None]:
    """A plain file where a folder belongs."""
    def plant(run_dir: Path) -> None:
        path = run_dir / rel
        if path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a folder\n")
    return plant


def folder_at(rel: str) -> Callable[[Path], None]:
    """A folder where a file belongs."""
    def plant(run_dir: Path) -> None:
        path = run_dir / rel
        path.unlink(missing_ok=True)
        (path / "inside").mkdir(parents=True)
    return plant


def model_widths(value):
    return lambda d: {**d, "model": {**d["model"], "widths": value}}


def as_strings(row: dict) -> dict:
    return {k: str(v) for k, v in row.items()}


def first_epoch(change):
    return lambda d: {**d, "epochs": [change(d["epochs"][0]), *d["epochs"][1:]]}


ALL = ("train", "evaluate", "export")
TRAIN = ("train",)
READERS = ("evaluate", "export")
# (case id, damage, commands that read the file, what the error line must say)
CASES = [
    ("config-garbage", put("config.json", b"{not json"), ALL,
     "config.json is damaged: not valid JSON"),
    ("config-empty", put("config.json", b""), ALL, "config.json is damaged: it is empty"),
    ("config-list", put("config.json", b"[1, 2]\n"), ALL,
     "config.json is damaged: it should be an object, not a list"),
    ("config-no-model", edit("config.json", without("model")), ALL,
     "config.json is damaged: model is missing"),
    ("config-model-string", edit("config.json", with_("model", "vgg")), ALL,
     "model should be an object"),
    ("config-model-widths", edit("config.json", model_widths("4,8")), ALL,
     "model.widths should be a list"),
    ("config-num-classes-string", edit("config.json", with_("num_classes", "4")), ALL,
     "num_classes should be an integer"),
    ("config-dataset-number", edit("config.json", with_("dataset", 7)), ALL,
     "dataset should be a string"),
    ("config-not-utf8", put("config.json", b"\xff\xfe{}"), ALL,
     "config.json is damaged: not UTF-8"),
    ("history-garbage", put("history.json", b"garbage"), TRAIN,
     "history.json is damaged: not valid JSON"),
    ("history-list", put("history.json", b"[]"), TRAIN,
     "history.json is damaged: it should be an object, not a list"),
    ("history-strings", put("history.json", b'{"a": "b", "c": "d"}'), TRAIN,
     "history.json is damaged: epochs is missing"),
    ("history-epochs-object", edit("history.json", with_("epochs", {"1": "x"})), TRAIN,
     "epochs should be a list"),
    ("history-row-strings", edit("history.json", first_epoch(as_strings)), TRAIN,
     "epochs[0].epoch should be an integer"),
    ("history-row-missing", edit("history.json", first_epoch(without("loss"))), TRAIN,
     "epochs[0].loss is missing"),
    ("classes-garbage", put("classes.json", b"chelsea,coffee"), ALL,
     "classes.json is damaged: not valid JSON"),
    ("classes-numbers", put("classes.json", b"[1, 2, 3, 4]"), ALL,
     "classes.json is damaged: [0] should be a string"),
    ("classes-object", put("classes.json", b'{"0": "chelsea"}'), ALL,
     "classes.json is damaged: it should be a list"),
    ("classes-too-few", put("classes.json", b'["chelsea"]'), ALL,
     "1 class names for a run of 4 classes"),
    ("best-record-garbage", put("checkpoints/best/best.json", b"\x00\x01"), READERS,
     "best.json is damaged"),
    ("best-record-types", edit("checkpoints/best/best.json", with_("checkpoint", 3)), READERS,
     "best.json is damaged: checkpoint should be a string"),
    # a file where a folder belongs
    ("checkpoints-a-file", file_at("checkpoints"), ALL,
     "checkpoints should be a folder but is a file"),
    ("best-a-file", file_at("checkpoints/best"), ALL, "best should be a folder but is a file"),
    ("damaged-a-file", file_at("checkpoints/damaged"), ALL,
     "damaged should be a folder but is a file"),
    ("damaged-ckpt-a-file", file_at("checkpoints/damaged/ckpt-2"), ALL,
     "ckpt-2 should be a folder of set-aside checkpoint files but is a file"),
    ("tensorboard-a-file", file_at("tensorboard"), ALL,
     "tensorboard should be a folder but is a file"),
    # a folder where a file belongs
    ("config-a-folder", folder_at("config.json"), ALL,
     "config.json should be a file but is a folder"),
    ("classes-a-folder", folder_at("classes.json"), ALL,
     "classes.json should be a file but is a folder"),
    ("history-a-folder", folder_at("history.json"), ALL,
     "history.json should be a file but is a folder"),
    ("status-a-folder", folder_at("status.json"), ALL,
     "status.json should be a file but is a folder"),
    ("curves-a-folder", folder_at("curves.png"), ALL,
     "curves.png should be a file but is a folder"),
    ("best-record-a-folder", folder_at("checkpoints/best/best.json"), ALL,
     "best.json should be a file but is a folder"),
    ("state-file-a-folder", folder_at("checkpoints/checkpoint"), ALL,
     "checkpoint should be a file but is a folder"),
    ("index-a-folder", lambda r: folder_at(f"checkpoints/{_newest_index(r)}")(r), ALL,
     ".index should be a file but is a folder"),
]


def _newest_index(run_dir: Path) -> str:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*.index"))[-1]


def _argv(command: str, dataset: Path, run_dir: Path, out: Path) -> list:
    return {"train": ["train", dataset, run_dir, *TRAIN_ARGS],
            "evaluate": ["evaluate", run_dir],
            "export": ["export", run_dir, out]}[command]


@pytest.mark.parametrize("case, damage, commands, message", CASES, ids=[c[0] for c in CASES])
def test_a_damaged_run_file_is_one_line_exit_2_and_nothing_changes(
        case, damage, commands, message, dataset, run_copy, tmp_path, capsys):
    damage(run_copy)
    before = snapshot(tmp_path, dataset)
    for command in commands:
        out = tmp_path / "exported"
        code = cli_main(_argv(command, dataset, run_copy, out))
        line = one_error_line(capsys.readouterr().err)
        assert code == 2, (command, line)
        assert message in line, (command, line)
        assert snapshot(tmp_path, dataset) == before, command
        assert not out.exists()


def test_history_damage_says_how_to_go_on(run_copy, dataset, capsys):
    (run_copy / "history.json").write_bytes(b"garbage")
    assert cli_main(_argv("train", dataset, run_copy, run_copy / "x")) == 2
    assert "move it away and resume" in one_error_line(capsys.readouterr().err)


def test_status_json_is_read_against_its_contract(run_copy):
    from imnet64.train.run_files import read_status

    assert read_status(run_copy).state == "finished"
    (run_copy / "status.json").write_text('{"state": 3}')
    with pytest.raises(UserError, match=r"status.json is damaged: state should be a string"):
        read_status(run_copy)


@pytest.mark.parametrize("value, hint, problem", [
    (True, int, "should be an integer, not a boolean"),
    (1.5, int, "should be an integer, not a number (1.5)"),
    (None, str, "should be a string, not null"),
    ([1, "a"], list[int], "[1] should be an integer"),
    ({"a": 1}, dict[str, str], "a should be a string"),
    (1, str | None, "should be a string or null, not a number (1)"),
])
def test_check_names_where_and_what(value, hint, problem):
    with pytest.raises(read_back.Mismatch, match=problem.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        read_back.check(value, hint)


def test_check_accepts_what_writers_write():
    read_back.check(3, float)
    read_back.check(None, int | None)
    read_back.check(["a"], tuple[str, ...])


# ---- (12) leftovers of an interrupted session, removed by the next one, and only they -----


def test_a_killed_sessions_temporaries_are_removed_by_the_next_run(run_copy, dataset, capsys):
    from imnet64.atomic import temp_path_for

    best = run_copy / "checkpoints" / "best"
    tf_temp = best / "ckpt-99_temp"  # TensorFlow's save folder of a kill mid best-save
    tf_temp.mkdir()
    (tf_temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
    (run_copy / "checkpoints" / "ckpt-98_temp").mkdir()
    ours = [temp_path_for(run_copy / name) for name in ("curves.png", "history.json")]
    ours.append(temp_path_for(best / "best.json"))
    theirs = [run_copy / ".curves.png.mine.tmp", run_copy / "notes_temp",
              best / "ckpt-99_temp.txt", run_copy / "ckpt-97_temp"]
    for path in theirs[:3]:
        path.write_bytes(b"the user's")
    theirs[3].mkdir()  # same name, but not in a checkpoints folder: not ours
    assert cli_main(["train", dataset, run_copy, *TRAIN_ARGS]) == 0
    capsys.readouterr()
    assert not tf_temp.exists() and not (run_copy / "checkpoints" / "ckpt-98_temp").exists()
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)


def test_export_folder_names_of_distinct_inputs_never_collide(tmp_path):
    from imnet64.label.export_folders import export_folders, export_name
    from imnet64.label.inputs import open_inputs

    from PIL import Image

    names = ["bad/gray8.png", "bad__gray8.png", "a/b/c.png", "a__b/c.png", "a/b__c.png",
             "x_/y.png", "x/_y.png", "x~1.png", "noext", "plain/name.png"]
    flat = [export_name(n) for n in names]
    assert len(set(flat)) == len(names), flat
    assert export_name("plain/name.png") == "plain__name.png"  # unchanged where unambiguous
    root = tmp_path / "in"
    for i, name in enumerate(names[:2]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), color=i * 100).save(root / name, format="PNG")
    inputs = open_inputs(root)
    rows = [(n, 3, "gray", 0.9) for n in inputs.names]
    dest = tmp_path / "classes"
    assert export_folders(inputs, rows, dest) == 2
    entries = sorted(dest.rglob("*.png"))
    assert len(entries) == 2
    assert {p.resolve() for p in entries} == {(root / n).resolve() for n in names[:2]}


# ---- (11) --val-fraction 0: trains without validation and says so, never "val nan" --------


def test_a_dataset_without_val_split_trains_without_validation_and_says_so(tmp_path, capsys,
                                                                           caplog):
    import logging

    from imnet64.pipeline.sample_images import write_sample

    write_sample(tmp_path / "imgs", 24, per_folder=12)
    assert cli_main(["shard-records", tmp_path / "imgs", tmp_path / "ds",
                     "--val-fraction", "0"]) == 0
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="imnet64"):
        assert cli_main(["train", tmp_path / "ds", tmp_path / "run", *TRAIN_ARGS]) == 0
    out = capsys.readouterr().out + caplog.text
    assert not re.search(r"\bnan\b", out), out
    assert "no val split" in caplog.text and "training without validation" in caplog.text
    assert "no validation (the dataset has no val split)" in out
