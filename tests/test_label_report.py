"""`imnet64 label-report` (issue 26): a picture drawn from the real label output.

Real photos labeled by the real offline teacher in 2 shards; the report's counts and classes
must be label-status's and the part CSVs', its sample images the very records' pixels, the
sample the same on every run; with true labels in the parts (the CSV column `truth` that
label parts of datasets with known labels carry), the teacher's accuracy and confusions.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
from pathlib import Path

from imnet64.formats.label_parts import part_paths
from imnet64.formats.label_status import label_status
from imnet64.label.options import LabelOptions
from imnet64.label.report_images import thumbnail
from imnet64.label.run import read_csv_rows, run

import numpy as np
import pytest
from imnet64_cli.main import main
from PIL import Image

SHARDS = 2


@pytest.fixture(scope="module")
def labeled(sample_dir, offline_teacher_dir, tmp_path_factory) -> Path:
    from imnet64.teacher import load_teacher

    out = tmp_path_factory.mktemp("label-report") / "out"
    teacher = load_teacher("offline")
    for index in range(SHARDS):
        run(sample_dir, out, LabelOptions(teacher_spec="offline", batch_size=16),
            index=index, count=SHARDS, teacher=teacher)
    return out


def _rows(out: Path) -> list[tuple[str, int, str, float]]:
    return [row for i in range(SHARDS)
            for row in read_csv_rows(part_paths(out, i, SHARDS).csv)]


def _report(capsys, *args) -> dict:
    code = main(["label-report", *map(str, args)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    png = Path(captured.out.split("report: ")[1].split("\n")[0])
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 600 and im.height > 300
    return json.loads(png.with_suffix(".json").read_text())


def test_report_is_drawn_from_the_label_output(labeled, sample_dir, capsys):
    report = _report(capsys, labeled, "--classes", 4, "--per-class", 5)
    totals = label_status(labeled).totals()
    assert (report["labeled"], report["rejected"], report["shards"]) == \
        (totals["labeled"], totals["rejected"], SHARDS)
    rows = _rows(labeled)
    counts = collections.Counter(label for _, label, _, _ in rows)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
    assert [(c["teacher_id"], c["count"]) for c in report["classes"]] == ranked
    assert report["distinct_classes"] == len(counts)
    assert report["low_confidence"] == sum(conf < 0.3 for *_, conf in rows)
    assert sum(report["histogram"]) == len(rows)
    by_path = {path: (label, conf) for path, label, _, conf in rows}
    for c in report["classes"]:
        assert sum(c["histogram"]) == c["count"]
        samples = c["samples"]
        assert len(samples) == min(5, c["count"])
        for s in samples:  # each sample is an image the teacher put in this class
            assert by_path[s["path"]] == (c["teacher_id"], pytest.approx(s["confidence"]))
    # the tile shown is the record's own pixels (the label part stores the file's bytes)
    first = report["classes"][0]["samples"][0]
    from imnet64.label.report_data import ReportOptions, collect, read_images

    data = read_images(collect(labeled, ReportOptions(classes=1, per_class=1)))
    shown = data.samples[report["classes"][0]["teacher_id"]][0]
    assert shown.path == first["path"]
    np.testing.assert_array_equal(shown.image,
                                  thumbnail((sample_dir / first["path"]).read_bytes()))


def test_sample_is_deterministic(labeled, capsys, tmp_path):
    a = _report(capsys, labeled, "--out", tmp_path / "a.png")
    b = _report(capsys, labeled, "--out", tmp_path / "b.png")
    assert a["classes"] == b["classes"]
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    c = _report(capsys, labeled, "--out", tmp_path / "c.png", "--seed", 1)
    assert [s["path"] for s in c["classes"][0]["samples"]] != \
        [s["path"] for s in a["classes"][0]["samples"]] or a["classes"][0]["count"] <= 8


def test_dataset_shows_its_kept_classes(labeled, capsys, tmp_path):
    from imnet64.formats.manifest import load_manifest
    from imnet64.records.write import ShardOptions, shard_records

    dataset = tmp_path / "dataset"
    shard_records(labeled, dataset, ShardOptions(val_fraction=0.2, classes=3,
                                                 shard_size_mb=1.0))
    report = _report(capsys, labeled, "--dataset", dataset, "--out", tmp_path / "r.png")
    kept = {c.teacher_id for c in load_manifest(dataset).classes}
    assert {c["teacher_id"] for c in report["classes"]} == kept
    assert all(c["kept"] for c in report["classes"]) and report["kept_classes"] == 3
    counts = [c["count"] for c in report["classes"]]
    assert counts == sorted(counts, reverse=True)
    # bounded: the most frequent of the kept classes
    two = _report(capsys, labeled, "--dataset", dataset, "--classes", 2, "--out",
                  tmp_path / "r2.png")
    assert two["classes"] == report["classes"][:2]


def _add_truth(out: Path, truth_of) -> None:
    """Fill the parts' `truth` column, as label parts of datasets with known labels carry it
    (teacher index, empty when unknown), and give their summaries the new CSV's size and
    sha256."""
    for i in range(SHARDS):
        paths = part_paths(out, i, SHARDS)
        with open(paths.csv, newline="") as f:
            rows = list(csv.reader(f))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        at = rows[0].index("truth")  # label writes the column, empty for inputs without truth
        w.writerow(rows[0])
        for row in rows[1:]:
            truth = truth_of(row[0], int(row[1]))
            row[at] = "" if truth is None else str(truth)
            w.writerow(row)
        data = buf.getvalue().encode()
        paths.csv.write_bytes(data)
        summary = json.loads(paths.summary.read_text())
        summary["files"]["csv"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        paths.summary.write_text(json.dumps(summary))


def test_truth_gives_accuracy_and_confusions(labeled, capsys, tmp_path):
    import shutil

    out = tmp_path / "with-truth"
    shutil.copytree(labeled, out)

    def truth_of(path: str, label: int) -> int | None:
        h = int(hashlib.sha256(path.encode()).hexdigest(), 16) % 3
        return None if h == 0 else label if h == 1 else 1  # unknown, right, 'tench'

    _add_truth(out, truth_of)
    assert label_status(out).complete
    report = _report(capsys, out, "--classes", 3)
    rows = _rows(labeled)
    truths = [(label, truth_of(path, label)) for path, label, _, _ in rows]
    known = [(t, u) for t, u in truths if u is not None]
    assert report["truth_known"] == len(known)
    assert report["truth_correct"] == sum(t == u for t, u in known)
    for c in report["classes"]:
        mine = [(t, u) for t, u in known if t == c["teacher_id"]]
        assert (c["truth_known"], c["truth_correct"]) == (len(mine),
                                                          sum(t == u for t, u in mine))
    wrong = collections.Counter((t, u) for t, u in known if t != u)
    top = report["confusions"][0]
    assert (top["teacher_id"], top["truth_id"]) == max(wrong, key=lambda k: (wrong[k], -k[0]))
    assert top["truth_name"] == "tench" and top["count"] == max(wrong.values())


def test_user_errors(tmp_path, capsys):
    assert main(["label-report", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    (tmp_path / "empty").mkdir()
    assert main(["label-report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
