"""`imnet64 label` on official-format ImageNet64 batch files, with the real offline teacher:
the pixels it sees, the truth it stores, the teacher's accuracy against it, and sharding."""

from __future__ import annotations

import csv
import zipfile

from imnet64.formats.imagenet64_classes import teacher_index
from imnet64.formats.label_parts import part_paths, read_summary
from imnet64.label.image_decode import decode_image
from imnet64.label.options import LabelOptions
from imnet64.label.run import PROBABILITY_TOLERANCE as TOLERANCE
from imnet64.label.run import run

import numpy as np
import pytest
from imagenet64_support import (
    batch_dict,
    known_photo_images,
    pickle_bytes,
    write_download_zip,
    write_npz,
    write_pickle,
)
from imnet64_cli.main import main
from test_label import records_of


@pytest.fixture(scope="module")
def teacher():
    from imnet64.teacher import load_teacher

    return load_teacher("offline")


@pytest.fixture(scope="module")
def photos():
    return known_photo_images()  # chelsea, coffee, motorcycle: two crops each


def label(input_path, out_dir, teacher, *, index=0, count=1, **options):
    options.setdefault("batch_size", 4)
    return run(input_path, out_dir, LabelOptions(teacher_spec="offline", **options),
               index=index, count=count, teacher=teacher)


def csv_rows(out_dir, index=0, count=1):
    with open(part_paths(out_dir, index, count).csv, newline="") as f:
        return list(csv.DictReader(f))


def test_label_sees_the_source_pixels_and_stores_the_truth(tmp_path, teacher, photos):
    images, labels = photos
    path = write_pickle(tmp_path / "val_data", batch_dict(images, labels, mean=False))
    summary, _ = label(path, tmp_path / "out", teacher)
    records = records_of(tmp_path / "out")
    assert [r.filename for r in records] == [f"val_data/{i:06d}" for i in range(len(images))]
    for r, image, devkit in zip(records, images, labels):
        # the image the teacher saw (stored as PNG) is the source photo, pixel for pixel:
        # a plane-order mix-up (HWC read as CHW, or B and R swapped) fails here
        assert np.array_equal(decode_image(r.encoded).image, image)
        assert r.truth == teacher_index(devkit)
    names = dict(enumerate(teacher.class_names))
    # the true label lands on the teacher class of the same name
    assert {names[r.truth] for r in records} == {"Egyptian cat", "espresso", "moped"}
    # a known photo of a known class: the teacher's top-1 is the truth (cat, motorbike);
    # the coffee cup at 64x64 is consomme to it, with espresso in its top-5
    for r in records:
        if names[r.truth] in ("Egyptian cat", "moped"):
            assert r.label == r.truth, (r.filename, names[r.label])
        else:
            assert r.label != r.truth and r.truth in r.topk_ids
    top1 = sum(r.label == r.truth for r in records)
    top5 = sum(r.truth in r.topk_ids[:5] for r in records)
    assert summary["truth"] == {"known": 6, "teacher_top1": top1, "teacher_top5": top5}
    assert (top1, top5) == (4, 6)
    # the CSV has the truth column, the summary on disk the counts
    rows = csv_rows(tmp_path / "out")
    assert [int(row["truth"]) for row in rows] == [r.truth for r in records]
    assert read_summary(part_paths(tmp_path / "out", 0, 1).summary)["truth"]["known"] == 6


def test_images_without_truth_keep_the_column_empty_and_no_feature(tmp_path, teacher, photos):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.fromarray(photos[0][0]).save(folder / "cat.png")
    summary, _ = label(folder, tmp_path / "out", teacher)
    assert records_of(tmp_path / "out")[0].truth is None
    assert csv_rows(tmp_path / "out")[0]["truth"] == ""
    assert "truth" not in summary


def test_shards_of_a_zip_equal_one_run_and_status_reports_truth(tmp_path, teacher, photos,
                                                              capsys):
    images, labels = photos
    files = {"train_data_batch_1.npz": None, "train_data_batch_2": pickle_bytes(
        batch_dict(images[3:], labels[3:]))}
    npz = write_npz(tmp_path / "b1.npz", batch_dict(images[:3], labels[:3]))
    files["train_data_batch_1.npz"] = npz.read_bytes()
    z = write_download_zip(tmp_path / "Imagenet64_train_part1.zip", files, "",
                           zipfile.ZIP_DEFLATED)
    one, two = tmp_path / "one", tmp_path / "two"
    whole, _ = label(z, one, teacher)
    for index in range(2):
        label(z, two, teacher, index=index, count=2, batch_size=2)
    a = {r.filename: r for r in records_of(one)}
    b = {r.filename: r for i in range(2) for r in records_of(two, i, 2)}
    assert a.keys() == b.keys() and len(a) == 6
    for name in a:
        assert a[name].truth == b[name].truth
        near_tie = a[name].topk_probs[0] - a[name].topk_probs[1] < TOLERANCE
        assert a[name].label == b[name].label or near_tie
    # resume: a finished shard is skipped, its files byte-identical
    before = part_paths(two, 1, 2).tfrecord.read_bytes()
    _, skipped = label(z, two, teacher, index=1, count=2, batch_size=2)
    assert skipped and part_paths(two, 1, 2).tfrecord.read_bytes() == before
    assert main(["label-status", str(two)]) == 0
    out = capsys.readouterr().out
    assert "teacher vs truth on 6 images: top-1 0.6667, top-5 1.0000" in out


@pytest.mark.slow
def test_slurm_label_sh_labels_the_downloaded_zip_as_is(tmp_path, photos):
    """slurm/label.sh with the real imnet64 on a zip as image-net.org serves it: no extra
    step, the parts carry the truth (what `imnet64 submit pipeline --input ZIP` runs)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    images, labels = photos
    z = write_download_zip(tmp_path / "Imagenet64_val.zip", {
        "val_data": pickle_bytes(batch_dict(images, labels, mean=False))})
    env = {"PATH": os.environ["PATH"], "IMNET64_CMD": str(Path(sys.executable).parent / "imnet64"),
           "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_ARRAY_JOB_ID": "7",
           "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0",
           "SLURM_ARRAY_TASK_MAX": "1", "SLURM_ARRAY_TASK_COUNT": "2",
           "IMNET64_INPUT": str(z), "IMNET64_TEACHER": "offline",
           **{k: v for k, v in os.environ.items() if k.startswith(("TF_", "IMNET64_HOME"))}}
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", str(repo / "slurm" / "label.sh")], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "teacher vs truth on 3 images" in done.stderr
    records = records_of(tmp_path / "work" / "labeled", 1, 2)
    assert [r.filename for r in records] == ["val_data/000003", "val_data/000004",
                                             "val_data/000005"]
    assert [r.truth for r in records] == [teacher_index(v) for v in labels[3:]]
