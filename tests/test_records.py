"""`imnet64 shard-records` and `imnet64 inspect` on real photos and real TFRecord files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import imnet64  # noqa: F401
from imnet64.cluster.environment import ShardSlot
from imnet64.errors import UserError
from imnet64.formats.shard_sidecar import SIDECAR_DIR, ShardSidecar
from imnet64.formats.tfrecord_schema import parse_example
from imnet64.records.write import ShardOptions, shard_records

import numpy as np
import pytest
from imnet64_cli.main import main as cli_main
from PIL import Image
from records_support import (
    TEACHER,
    read_dataset,
    read_labeled_parts,
    read_shard,
    sample,
    write_label_out_dir,
)

REPO = Path(__file__).resolve().parents[1]
TIDS = (282, 283, 286, 405, 968)  # tabby, tiger cat, Egyptian cat, airliner, espresso


def _labels(n: int) -> list[tuple[int, float]]:
    # uneven classes (class i gets weight i+1) and confidences spread over 0.2..0.95
    weights = [t for i, t in enumerate(TIDS) for _ in range(i + 1)]
    return [
        (weights[(i * 7) % len(weights)], 0.2 + 0.75 * ((i * 37) % 100) / 100) for i in range(n)
    ]


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """A label OUT_DIR of 150 real photos in 2 parts, plus the photos."""
    tmp = tmp_path_factory.mktemp("labeled")
    root, files = sample(tmp, 150)
    items = write_label_out_dir(tmp / "labels_out", root, files, _labels(len(files)))
    return tmp / "labels_out", root, items


@pytest.fixture(scope="module")
def dataset(labeled, tmp_path_factory):
    """shard-records with default filters into small (~0.25 MiB) shards, one worker."""
    out = tmp_path_factory.mktemp("ds") / "one"
    result = shard_records(labeled[0], out, ShardOptions(shard_size_mb=0.25, seed=3))
    assert result.status == "complete"
    return out


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file's bytes but dataset.run.json's: where the manifest was written (host,
    Slurm ids), which may differ while the dataset is the same."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "dataset.run.json"
    }


def _name(rec: dict) -> str:
    return rec["image/filename"][0].decode()


def test_every_labeled_input_once_and_manifest_counts_match_files(labeled, dataset):
    _, _, items = labeled
    manifest = json.loads((dataset / "dataset.json").read_text())
    records = read_dataset(dataset)
    names = [_name(r) for split in records.values() for r in split]
    assert sorted(names) == sorted(it.filename for it in items)  # each exactly once
    assert not {_name(r) for r in records["train"]} & {_name(r) for r in records["val"]}

    for split, info in manifest["splits"].items():
        assert info["count"] == len(records[split])
        labels = Counter(r["image/class/label"][0] for r in records[split])
        assert info["class_counts"] == [labels[i] for i in range(len(manifest["classes"]))]
        for shard in info["shards"]:
            path = dataset / shard["file"]
            assert shard["examples"] == len(read_shard(path))
            assert shard["bytes"] == path.stat().st_size
            assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # several shards, sized near the target, named train-IIIII-of-NNNNN
    train = manifest["splits"]["train"]["shards"]
    assert len(train) >= 3
    assert train[0]["file"] == f"train-00000-of-{len(train):05d}.tfrecord"
    assert all(s["bytes"] < 0.25 * 2**20 * 1.3 for s in train)
    # class-balanced shards: each class's count differs by at most 1 between shards
    per_shard = [
        Counter(r["image/class/label"][0] for r in read_shard(dataset / s["file"])) for s in train
    ]
    for label in range(len(manifest["classes"])):
        counts = [c[label] for c in per_shard]
        assert max(counts) - min(counts) <= 1
    # shuffled across classes: a shard is not sorted by label
    first = [r["image/class/label"][0] for r in read_shard(dataset / train[0]["file"])]
    assert first != sorted(first)
    # stratified split: val holds ~10% of every class
    for c, (n_train, n_val) in enumerate(
        zip(manifest["splits"]["train"]["class_counts"], manifest["splits"]["val"]["class_counts"])
    ):
        assert n_val == int((n_train + n_val) * 0.1 + 0.5), c
    assert manifest["teacher"] == TEACHER
    assert manifest["stats"] == {
        "source_images": 150,
        "examples": 150,
        "converted": 0,
        "kept_original_bytes": 150,
        "dropped": {"min_confidence": 0, "classes": 0, "max_per_class": 0},
    }


def test_png_bytes_round_trip_exactly_and_parse(labeled, dataset):
    _, root, items = labeled
    by_name = {it.filename: it for it in items}
    manifest = json.loads((dataset / "dataset.json").read_text())
    records = read_dataset(dataset)
    for rec in records["train"] + records["val"]:
        original = by_name[_name(rec)]
        assert rec["image/encoded"][0] == (root / original.filename).read_bytes()
        cls = manifest["classes"][rec["image/class/label"][0]]
        assert cls["teacher_id"] == original.label == rec["image/class/teacher_label"][0]
        assert rec["teacher/topk/ids"] == list(original.topk_ids)
    # the library's parse function gives the photo's pixels, the label and soft labels
    rec = records["train"][0]
    from imnet64.formats.tfrecord_schema import serialize_dataset_example  # noqa: F401  (schema in use)

    import tensorflow as tf

    shard = dataset / manifest["splits"]["train"]["shards"][0]["file"]
    serialized = next(iter(tf.data.TFRecordDataset(str(shard))))
    image, label, confidence, soft = parse_example(serialized, len(manifest["classes"]))
    expected = np.asarray(Image.open(root / _name(rec)).convert("RGB"))
    assert image.dtype == tf.uint8 and image.shape == (64, 64, 3)
    np.testing.assert_array_equal(image.numpy(), expected)
    assert int(label) == rec["image/class/label"][0]
    assert float(confidence) == pytest.approx(rec["teacher/confidence"][0])
    assert float(soft[int(label)]) == pytest.approx(float(confidence))


def test_rerun_changes_nothing_and_new_options_replace_old_shards(labeled, dataset, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in dataset.iterdir()}
    content = _tree_bytes(dataset)
    result = shard_records(labeled[0], dataset, ShardOptions(shard_size_mb=0.25, seed=3))
    assert result.status == "up-to-date"
    assert {p.name: p.stat().st_mtime_ns for p in dataset.iterdir()} == before
    assert _tree_bytes(dataset) == content

    # resume: a lost manifest and one lost shard -> only that shard is rewritten
    copy = tmp_path / "copy"
    shard_records(labeled[0], copy, ShardOptions(shard_size_mb=0.25, seed=3))
    (copy / "dataset.json").unlink()
    (copy / "train-00001-of-00004.tfrecord").unlink()
    result = shard_records(labeled[0], copy, ShardOptions(shard_size_mb=0.25, seed=3))
    assert (result.status, result.shards_written) == ("complete", 1)
    assert _tree_bytes(copy) == content

    # other options: another dataset, refused unless forced; then the old plan's shards go
    with pytest.raises(UserError, match="holds another dataset"):
        shard_records(labeled[0], copy, ShardOptions(shard_size_mb=1.0, seed=3))
    assert _tree_bytes(copy) == content
    result = shard_records(labeled[0], copy, ShardOptions(shard_size_mb=1.0, seed=3), force=True)
    assert result.status == "complete"
    assert sorted(p.name for p in copy.glob("*.tfrecord")) == [
        "train-00000-of-00001.tfrecord",
        "val-00000-of-00001.tfrecord",
    ]


def test_one_and_two_workers_and_two_ranks_give_identical_output(labeled, dataset, tmp_path):
    reference = _tree_bytes(dataset)
    options = ShardOptions(shard_size_mb=0.25, seed=3)
    two = tmp_path / "two"
    result = shard_records(labeled[0], two, options, num_workers=2)
    assert result.shards_written == len([k for k in reference if k.endswith(".tfrecord")])
    assert _tree_bytes(two) == reference

    # two Slurm ranks: rank 1 leaves the manifest to whoever finishes last
    ranks = tmp_path / "ranks"
    r0 = shard_records(
        labeled[0], ranks, options, slot=ShardSlot(0, 2, "slurm-rank"), wait_for_ranks=False
    )
    assert r0.status == "partial" and not (ranks / "dataset.json").exists()
    r1 = shard_records(labeled[0], ranks, options, slot=ShardSlot(1, 2, "slurm-rank"))
    assert r1.status == "complete"
    assert r0.shards_written + r1.shards_written == result.shards_written
    assert _tree_bytes(ranks) == reference


def test_filters_renumber_classes_and_keep_teacher_ids(labeled, tmp_path):
    src, _, items = labeled
    counts = Counter(it.label for it in items)

    def run(name, **kw):
        out = tmp_path / name
        shard_records(src, out, ShardOptions.build(val_fraction=0.2, **kw))
        return json.loads((out / "dataset.json").read_text()), read_dataset(out)

    def kept_names(records):
        return {_name(r) for split in records.values() for r in split}

    # --min-confidence: exactly the images at or above it
    m, recs = run("conf", min_confidence=0.6)
    assert kept_names(recs) == {it.filename for it in items if it.confidence >= 0.6}
    assert m["stats"]["dropped"]["min_confidence"] == sum(it.confidence < 0.6 for it in items)
    assert all(r["teacher/confidence"][0] >= 0.6 for s in recs.values() for r in s)

    # --classes K: the K most frequent, renumbered 0..K-1 in teacher-id order
    m, recs = run("top2", classes="2")
    top2 = sorted(t for t, _ in counts.most_common(2))
    assert [(c["id"], c["teacher_id"]) for c in m["classes"]] == list(enumerate(top2))
    assert kept_names(recs) == {it.filename for it in items if it.label in top2}
    for r in recs["train"] + recs["val"]:
        label = r["image/class/label"][0]
        assert m["classes"][label]["teacher_id"] == r["image/class/teacher_label"][0]
        # top-k renumbered into kept classes, -1 for classes not kept
        assert r["teacher/topk/labels"] == [
            top2.index(t) if t in top2 else -1 for t in r["teacher/topk/ids"]
        ]

    # --classes names (with the ImageNet spelling), and --max-per-class
    m, recs = run("named", classes="espresso,tabby", max_per_class=7, seed=5)
    assert [(c["id"], c["name"], c["teacher_id"]) for c in m["classes"]] == [
        (0, "tabby", 282),
        (1, "espresso", 968),
    ]
    per_class = Counter(r["image/class/teacher_label"][0] for s in recs.values() for r in s)
    assert per_class == {282: min(7, counts[282]), 968: min(7, counts[968])}
    assert [
        a + b
        for a, b in zip(m["splits"]["train"]["class_counts"], m["splits"]["val"]["class_counts"])
    ] == [7, 7]
    # the cap is a seeded sample: another seed keeps other images
    _, other = run("named2", classes="espresso,tabby", max_per_class=7, seed=6)
    assert kept_names(other) != kept_names(recs)

    with pytest.raises(UserError, match="no class named 'unicorn'"):
        run("bad", classes="tabby,unicorn")
    with pytest.raises(UserError, match="no images left"):
        run("none", min_confidence=0.999)


def test_partial_label_output_is_an_error_unless_allowed(labeled, tmp_path):
    src = tmp_path / "partial"
    root, _, items = labeled
    import shutil

    shutil.copytree(root, src)
    (src / "labels" / "part-00001-of-00002.json").unlink()
    with pytest.raises(UserError, match=r"incomplete: 1 of 2 parts not done \(1 partial\)"):
        shard_records(src, tmp_path / "out", ShardOptions())
    result = shard_records(src, tmp_path / "out", ShardOptions(), allow_partial=True)
    part0 = read_labeled_parts(src, "part-00000-of-00002")
    assert result.manifest["stats"]["source_images"] == len(part0) < len(items)
    names = {_name(r) for split in read_dataset(tmp_path / "out").values() for r in split}
    assert names == {it.filename for it in part0}
    assert result.manifest["source_info"]["parts_not_done"] == [1]


def test_class_folder_source_and_conversion_to_64x64(tmp_path):
    """Seed layout: one folder per class. ImageNet names (plain, or as safe_folder_name makes
    them) keep their teacher id; other files are converted (JPEG, other sizes, grey)."""
    root, files = sample(tmp_path, 30)
    tree = tmp_path / "tree"
    layout = {"tabby": files[:10], "0286_Egyptian_cat": files[10:20], "my stuff": files[20:]}
    for folder, members in layout.items():
        (tree / folder).mkdir(parents=True)
        for p in members:
            (tree / folder / p.name).write_bytes(p.read_bytes())
    big = Image.open(files[0]).convert("RGB").resize((100, 80))
    big.save(tree / "my stuff" / "big.jpg", quality=90)
    Image.open(files[1]).convert("L").save(tree / "my stuff" / "grey.png")  # 8-bit grey: kept
    (tree / "notes.txt").write_text("not a class")

    out = tmp_path / "ds"
    result = shard_records(tree, out, ShardOptions(val_fraction=0.2))
    m = result.manifest
    assert [(c["id"], c["name"], c["teacher_id"]) for c in m["classes"]] == [
        (0, "Egyptian cat", 286),
        (1, "my stuff", None),
        (2, "tabby", 282),
    ]
    assert [
        a + b
        for a, b in zip(m["splits"]["train"]["class_counts"], m["splits"]["val"]["class_counts"])
    ] == [10, 12, 10]
    assert m["stats"]["converted"] == 1
    recs = read_dataset(out)
    by_name = {_name(r): r for s in recs.values() for r in s}
    assert len(by_name) == 32
    assert (
        by_name["my stuff/grey.png"]["image/encoded"][0]
        == (tree / "my stuff/grey.png").read_bytes()
    )
    big_rec = by_name["my stuff/big.jpg"]
    assert big_rec["image/encoded"][0][:8] == b"\x89PNG\r\n\x1a\n"
    assert big_rec["image/class/teacher_label"] == [-1]
    image, label, _, soft = parse_example(_serialized(out, "my stuff/big.jpg"), 3)
    assert image.shape == (64, 64, 3) and int(label) == 1
    np.testing.assert_array_equal(soft.numpy(), [0.0, 1.0, 0.0])  # folder label: one-hot
    # the conversion is a plain resize of the decoded JPEG
    want = np.asarray(
        Image.open(tree / "my stuff/big.jpg").convert("RGB").resize((64, 64), Image.BICUBIC)
    )
    np.testing.assert_array_equal(image.numpy(), want)


def _serialized(out: Path, filename: str) -> bytes:
    from imnet64.formats.tfrecord_file import iter_records

    for shard in sorted(out.glob("*.tfrecord")):
        for _, data in iter_records(shard):
            if filename.encode() in data:
                return data
    raise AssertionError(filename)


def test_raw_encoding_holds_the_same_pixels(labeled, dataset, tmp_path):
    out = tmp_path / "raw"
    result = shard_records(
        labeled[0], out, ShardOptions(shard_size_mb=0.25, seed=3, encoding="raw")
    )
    assert result.manifest["encoding"] == "raw"
    png = {_name(r): r for s in read_dataset(dataset).values() for r in s}
    for split in read_dataset(out).values():
        for rec in split:
            raw = np.frombuffer(rec["image/encoded"][0], np.uint8).reshape(64, 64, 3)
            from io import BytesIO

            pixels = np.asarray(
                Image.open(BytesIO(png[_name(rec)]["image/encoded"][0])).convert("RGB")
            )
            np.testing.assert_array_equal(raw, pixels)


def _cli(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "imnet64_cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_inspect_verify_catches_a_flipped_byte(dataset, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    assert cli_main(["inspect", str(copy), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify: all 5 shard(s) match" in out and "train " in out and "tabby" in out

    shard = copy / "train-00002-of-00004.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    assert cli_main(["inspect", str(copy), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "MISMATCH train-00002-of-00004.tfrecord: sha256" in err
    assert "verify: 1 problem(s)" in err


def test_cli_shard_records_and_one_line_errors(labeled, tmp_path):
    code, out = _cli(
        "shard-records",
        str(labeled[0]),
        str(tmp_path / "ds"),
        "--classes",
        "3",
        "--num-workers",
        "1",
    )
    assert code == 0, out
    assert "dataset.json: 3 classes" in out
    code, out = _cli("shard-records", str(labeled[0]), str(tmp_path / "ds"), "--classes", "3")
    assert code == 0 and "up to date" in out

    for args, message in [
        (("shard-records", str(tmp_path / "nope"), str(tmp_path / "o")), "does not exist"),
        (
            ("shard-records", str(labeled[0]), str(tmp_path / "o"), "--val-fraction", "1.5"),
            "--val-fraction must be in [0, 1)",
        ),
        (
            ("shard-records", str(labeled[0]), str(tmp_path / "o"), "--classes", "0"),
            "--classes K must be at least 1",
        ),
        (("inspect", str(tmp_path)), "is not an imnet64 dataset"),
        (
            ("shard-records", str(labeled[0]), str(labeled[0] / "labels" / "ds")),
            "must not be inside SOURCE",
        ),
    ]:
        code, out = _cli(*args)
        lines = [line for line in out.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), out
        assert message in lines[0]


@pytest.mark.slow
def test_two_slurm_ranks_under_srun_write_one_dataset(labeled, dataset, tmp_path):
    """Two concurrent `imnet64 shard-records` processes with SLURM_PROCID 0/1 of
    SLURM_NTASKS 2 (what srun starts): disjoint shard sets, one manifest, the same bytes as
    one process."""
    out = tmp_path / "srun"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imnet64_cli.main",
                "shard-records",
                str(labeled[0]),
                str(out),
                "--shard-size-mb",
                "0.25",
                "--seed",
                "3",
            ],
            env={**env, "SLURM_PROCID": str(rank), "SLURM_NTASKS": "2", "SLURM_JOB_ID": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        for rank in range(2)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "dataset.json: 5 classes" in logs[0]  # rank 0 returns only with the manifest
    written = [int(log.split("wrote ")[1].split(" shard")[0]) for log in logs]
    assert written == [3, 2]  # shard jobs 0,2,4 on rank 0; 1,3 on rank 1
    assert _tree_bytes(out) == _tree_bytes(dataset)
    from imnet64.formats.manifest import dataset_provenance

    assert dataset_provenance(out)["slurm_job_id"] == "1"  # in the sidecar, not dataset.json
    assert dataset_provenance(dataset)["slurm_job_id"] == (os.environ.get("SLURM_JOB_ID") or None)


# ------------------------------------------- another dataset in OUT_DIR; leftovers of a kill


def _hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> sha256."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _copy(dataset: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(dataset, to)
    return to


def test_another_dataset_in_out_dir_is_refused_and_left_intact(labeled, dataset, tmp_path):
    out = _copy(dataset, tmp_path / "ds")
    before = _hashes(out)
    other = ShardOptions(shard_size_mb=1.0, seed=4)
    with pytest.raises(UserError) as refused:
        shard_records(labeled[0], out, other)
    message = str(refused.value)
    assert str(out) in message and "another dataset" in message and "--force" in message
    assert "\n" not in message
    assert _hashes(out) == before

    # the command line: one line, exit 2, nothing touched
    code, text = _cli("shard-records", str(labeled[0]), str(out), "--seed", "4")
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), text
    assert "another dataset" in lines[0] and str(out) in lines[0]
    assert _hashes(out) == before

    # --force replaces it; a file imnet64 did not write stays
    (out / "notes.txt").write_text("mine")
    code, text = _cli("shard-records", str(labeled[0]), str(out), "--seed", "4", "--force")
    assert code == 0, text
    assert "dataset.json: 5 classes" in text
    assert json.loads((out / "dataset.json").read_text())["options"]["seed"] == 4
    assert (out / "notes.txt").read_text() == "mine"


def test_force_replaces_only_the_old_datasets_own_files(labeled, dataset, tmp_path):
    out = _copy(dataset, tmp_path / "ds")
    old = json.loads((out / "dataset.json").read_text())
    old_shards = [s["file"] for split in old["splits"].values() for s in split["shards"]]
    # files imnet64 did not write: a note, and a file named like a shard that no record lists
    (out / "notes.txt").write_text("mine")
    (out / "train-00007-of-00009.tfrecord").write_bytes(b"not imnet64's")
    foreign = {n: h for n, h in _hashes(out).items() if n in ("notes.txt",
                                                                 "train-00007-of-00009.tfrecord")}

    result = shard_records(labeled[0], out, ShardOptions(shard_size_mb=1.0, seed=4), force=True)
    assert result.status == "complete"
    splits = result.manifest["splits"].values()
    new_shards = [s["file"] for split in splits for s in split["shards"]]
    assert new_shards == ["train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"]
    left = _hashes(out)
    assert {n: left[n] for n in foreign} == foreign  # kept, byte for byte
    for name in set(old_shards) - set(new_shards):
        assert not (out / name).exists() and not (out / ".shards" / f"{name}.json").exists()
    assert sorted(left) == sorted(
        [*foreign, "dataset.json", "dataset.run.json", *new_shards,
         *(f".shards/{n}.json" for n in new_shards)]
    )
    # and the replacement is now the dataset a plain re-run finds up to date
    again = shard_records(labeled[0], out, ShardOptions(shard_size_mb=1.0, seed=4))
    assert again.status == "up-to-date"


def test_a_folder_of_other_files_is_refused_unless_forced_and_they_are_kept(labeled, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    (out / "train-00000-of-00001.tfrecord").write_bytes(b"someone else's records")
    before = _hashes(out)
    with pytest.raises(UserError, match="files imnet64 did not write") as refused:
        shard_records(labeled[0], out, ShardOptions(shard_size_mb=1.0))
    assert "holiday.jpg" in str(refused.value) and str(out) in str(refused.value)
    assert _hashes(out) == before
    # --force writes beside them, but never over a file no record says imnet64 wrote
    with pytest.raises(UserError, match="train-00000-of-00001.tfrecord"):
        shard_records(labeled[0], out, ShardOptions(shard_size_mb=1.0), force=True)
    assert _hashes(out) == before
    (out / "train-00000-of-00001.tfrecord").unlink()
    result = shard_records(labeled[0], out, ShardOptions(shard_size_mb=1.0), force=True)
    assert result.status == "complete"
    assert (out / "holiday.jpg").read_bytes() == b"\xff\xd8 a photo"


def test_a_dataset_json_imnet64_did_not_write_is_never_replaced(labeled, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "dataset.json").write_text('{"name": "my own dataset"}\n')
    for force in (False, True):
        with pytest.raises(UserError, match="not an imnet64 manifest"):
            shard_records(labeled[0], out, ShardOptions(), force=force)
    assert (out / "dataset.json").read_text() == '{"name": "my own dataset"}\n'


def test_a_partly_written_other_dataset_is_refused_but_its_own_resume_is_not(
    labeled, dataset, tmp_path
):
    # a run with other options that was killed: its sidecars, no manifest
    out = _copy(dataset, tmp_path / "ds")
    (out / "dataset.json").unlink()
    (out / "train-00001-of-00004.tfrecord").unlink()
    before = _hashes(out)
    with pytest.raises(UserError, match="partly written dataset"):
        shard_records(labeled[0], out, ShardOptions(shard_size_mb=0.25, seed=4))
    assert _hashes(out) == before
    # the same options resume it
    result = shard_records(labeled[0], out, ShardOptions(shard_size_mb=0.25, seed=3))
    assert (result.status, result.shards_written) == ("complete", 1)


def test_a_killed_runs_temporaries_are_removed_and_look_alikes_kept(labeled, dataset, tmp_path):
    from imnet64 import atomic

    out = _copy(dataset, tmp_path / "ds")
    reference = _tree_bytes(dataset)
    (out / "dataset.json").unlink()
    (out / "train-00002-of-00004.tfrecord").unlink()
    # what a writer killed mid-shard, mid-sidecar and mid-manifest leaves (the real names)
    ours = [
        atomic.temp_path_for(out / "train-00002-of-00004.tfrecord"),
        atomic.temp_path_for(out / "val-00000-of-00001.tfrecord"),
        atomic.temp_path_for(out / ".shards" / "train-00002-of-00004.tfrecord.json"),
        atomic.temp_path_for(out / "dataset.json"),
        atomic.temp_path_for(out / "train-00000-of-00009.tfrecord"),  # of an older plan
    ]
    for path in ours:
        path.write_bytes(b"partial")
        os.utime(path, (1e9, 1e9))  # long ago
    look_alikes = [
        ".train-00002-of-00004.tfrecord.tmp",  # no random part
        ".train-00002-of-00004.tfrecord.ABCDEFGH.tmp",  # not what tempfile makes
        "train-00002-of-00004.tfrecord.abcd1234.tmp",  # not hidden
        ".train-00002-of-00004.tfrecord.abcd1234.tmp.keep",
        ".notes.txt.abcd1234.tmp",  # a temp of a file imnet64 does not write
        ".shards/.notes.json.abcd1234.tmp",
    ]
    for name in look_alikes:
        (out / name).write_bytes(b"not ours")

    result = shard_records(labeled[0], out, ShardOptions(shard_size_mb=0.25, seed=3))
    assert (result.status, result.shards_written) == ("complete", 1)
    assert not [p for p in ours if p.exists()]
    assert all((out / name).read_bytes() == b"not ours" for name in look_alikes)
    left = _tree_bytes(out)
    assert {k: v for k, v in left.items() if k not in look_alikes} == reference


def test_shard_sidecars_are_their_typed_record_as_json(labeled, tmp_path):
    out = tmp_path / "ds"
    shard_records(labeled[0], out, ShardOptions(shard_size_mb=0.25, seed=3))
    sidecars = sorted((out / SIDECAR_DIR).glob("*.json"))
    assert sidecars
    for path in sidecars:
        data = json.loads(path.read_text("utf-8"))
        assert ShardSidecar.from_json(data).to_json() == data


@pytest.mark.parametrize("damage", ["image byte flipped", "record payload garbled"])
def test_a_damaged_label_part_of_the_right_size_is_named_not_used(labeled, tmp_path, damage):
    """label-status checks only sizes; shard-records checks each part against the sha256 its
    summary recorded, so a flipped bit in a label part is an error naming the part (a
    garbled record used to surface as protobuf's DecodeError), and nothing is written."""
    out = tmp_path / "labels_out"
    shutil.copytree(labeled[0], out)
    record_path = next(out.rglob("part-00001-of-00002.tfrecord"))
    data = bytearray(record_path.read_bytes())
    if damage == "image byte flipped":
        at = len(data) // 2  # inside some record's PNG bytes
        data[at] ^= 0x01
    else:
        data[12:40] = b"\xff" * 28  # the first record's payload: not a tf.train.Example
    record_path.write_bytes(bytes(data))
    ds = tmp_path / "ds"
    with pytest.raises(UserError, match=r"part-00001-of-00002\.tfrecord.*(sha256|damaged)"):
        shard_records(out, ds, ShardOptions(shard_size_mb=0.25, seed=3))
    assert not (ds / "dataset.json").exists()
