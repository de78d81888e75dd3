"""shard-records on the real output of `imnet64 label` (offline MobileNet V2 teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import imnet64  # noqa: F401
from imnet64.formats.manifest import load_manifest
from imnet64.pipeline.sample_images import write_sample
from imnet64.records.inspect import verify
from imnet64.records.write import ShardOptions, shard_records

import pytest
from PIL import Image
from records_support import read_dataset, read_labeled_parts


@pytest.mark.slow
def test_label_output_to_shards(tmp_path):
    from imnet64.label.options import LabelOptions
    from imnet64.label.run import run
    from imnet64.teacher import load_teacher

    photos = tmp_path / "photos"
    files = write_sample(photos, 24, per_folder=12)
    Image.open(files[0]).resize((96, 80)).save(photos / "000" / "wide.jpg")  # converted later
    (photos / "000" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # rejected
    teacher = load_teacher("offline")
    out = tmp_path / "labels"
    summaries = [
        run(photos, out, LabelOptions(teacher_spec="offline", batch_size=8), index=i, count=2,
            teacher=teacher)[0]
        for i in range(2)
    ]
    assert sum(s["rejected"] for s in summaries) == 1

    ds = tmp_path / "ds"
    result = shard_records(out, ds, ShardOptions(val_fraction=0.25))
    assert result.status == "complete"
    labeled = {it.filename: it for it in read_labeled_parts(out)}
    assert len(labeled) == 25 and "000/broken.png" not in labeled
    records = read_dataset(ds)
    names = [r["image/filename"][0].decode() for s in records.values() for r in s]
    assert sorted(names) == sorted(labeled)  # every labeled image once, the reject nowhere
    manifest = json.loads((ds / "dataset.json").read_text())
    assert manifest["teacher"] == summaries[0]["teacher"]
    assert manifest["source_info"]["rejected"] == 1 and manifest["source_info"]["labeled"] == 25
    assert manifest["stats"]["converted"] == 1  # wide.jpg: resized to 64x64, PNG
    for split in records.values():
        for r in split:
            item = labeled[r["image/filename"][0].decode()]
            cls = manifest["classes"][r["image/class/label"][0]]
            assert cls["teacher_id"] == item.label and cls["name"] == item.class_name
            if item.image_format == "png" and (item.height, item.width) == (64, 64):
                assert r["image/encoded"][0] == item.encoded
    assert verify(load_manifest(ds)) == []
    assert shard_records(out, ds, ShardOptions(val_fraction=0.25)).status == "up-to-date"
    assert (
        Path(ds / "dataset.json").read_text()
        == json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
