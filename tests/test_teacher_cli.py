"""`imnet64 teacher classify | build-offline` with the real offline teacher, and the one-line
errors of the real installed command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from imnet64.pipeline.sample_images import photo_path
from imnet64.teacher.offline import default_weights_path

import pytest
from imnet64_cli.main import main as cli_main
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """chelsea and coffee as shipped, and shrunk to 64x64 like downsampled ImageNet."""
    tmp = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("chelsea", "coffee"):
        src = photo_path("skimage", f"data/{name}.png")
        out[name] = src
        with Image.open(src) as im:
            small = tmp / f"{name}_64.png"
            im.convert("RGB").resize((64, 64), Image.BOX).save(small)
        out[f"{name}_64"] = small
    return out


def test_classify_real_photos_full_size_and_64px(offline_teacher_dir, photos, capsys):
    order = ["chelsea", "chelsea_64", "coffee", "coffee_64"]
    args = ["teacher", "classify", "--teacher", "offline", "--json"]
    assert cli_main(args + [str(photos[k]) for k in order]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["teacher"] == "offline"
    tops = {k: [p["name"] for p in r["top"]] for k, r in zip(order, result["images"])}
    for key in ("chelsea", "chelsea_64"):
        assert tops[key][0] in CATS, tops[key]
    for key in ("coffee", "coffee_64"):
        assert {"espresso", "cup"} & set(tops[key]), tops[key]
    probs = [p["probability"] for p in result["images"][0]["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0.3 < probs[0] <= 1

    # The table form: names with percentages, one block per image.
    assert cli_main(["teacher", "classify", "--teacher", "offline", "--top", "2",
                     str(photos["coffee"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "teacher: offline" and len(lines) == 4
    assert "espresso" in lines[2] and lines[2].strip().startswith("1.") and "%" in lines[2]


def test_classify_any_pil_mode(offline_teacher_dir, photos, tmp_path, capsys):
    with Image.open(photos["chelsea"]) as im:
        im.convert("L").save(tmp_path / "grey.png")
        im.convert("RGBA").save(tmp_path / "rgba.png")
        im.convert("P").save(tmp_path / "palette.gif")
        im.convert("RGB").save(tmp_path / "photo.jpg", quality=90)
    files = sorted(str(p) for p in tmp_path.iterdir())
    assert cli_main(["teacher", "classify", "--teacher", "offline", "--json", *files]) == 0
    for r in json.loads(capsys.readouterr().out)["images"]:
        assert r["top"][0]["name"] in CATS | {"lynx", "tabby"}, r  # grey cats look like lynx


def test_build_offline_into_a_non_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("user data")
    assert cli_main(["teacher", "build-offline", str(tmp_path)]) == 2
    assert "already exists and is not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "user data"


def _run(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).with_name("imnet64")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "imnet64_cli.main"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "TFHUB_CACHE_DIR": "/nonexistent-cache"})


def _assert_one_line_error(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr


def test_real_cli_errors_bad_handle_missing_path_corrupt_weights(tmp_path, photos):
    _assert_one_line_error(
        _run("teacher", "classify", "--teacher", "http://127.0.0.1:9/no/such/model",
             str(photos["chelsea"])),
        "imnet64 teacher fetch")
    _assert_one_line_error(
        _run("teacher", "classify", "--teacher", str(tmp_path / "missing"), str(photos["coffee"])),
        "nor an existing SavedModel directory")
    corrupt = tmp_path / "mobilenet_v2.pth"
    shutil.copyfile(default_weights_path(), corrupt)
    data = bytearray(corrupt.read_bytes())
    data[4096] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    out = tmp_path / "teacher"
    _assert_one_line_error(_run("teacher", "build-offline", str(out), "--weights", str(corrupt)),
                           "corrupt or not the expected one")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["mobilenet_v2.pth"]


def test_offline_teacher_is_built_once_and_rebuilt_when_stale(tmp_path):
    from imnet64.atomic import read_json, write_json
    from imnet64.teacher.offline import METADATA_FILE, ensure_offline_teacher

    path = ensure_offline_teacher(tmp_path)
    assert path == tmp_path / "teachers" / "mobilenet_v2_torchvision"
    built = (path / "saved_model.pb").stat().st_mtime_ns
    assert ensure_offline_teacher(tmp_path) == path  # cached: not built again
    assert (path / "saved_model.pb").stat().st_mtime_ns == built

    meta = read_json(path / METADATA_FILE)
    write_json(path / METADATA_FILE, {**meta, "build_version": 0})  # an older build
    assert ensure_offline_teacher(tmp_path) == path
    assert read_json(path / METADATA_FILE) == meta
    assert sorted(p.name for p in path.parent.iterdir()) == ["mobilenet_v2_torchvision"]
