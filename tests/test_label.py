"""`imnet64 label` with the real offline teacher (torchvision MobileNet V2) on real photos.

Image counts stay in the tens: the teacher labels ~80 images/s on the 2 shared cores.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import time
import zlib
from pathlib import Path

from imnet64.errors import UserError
from imnet64.formats.label_parts import part_paths, read_summary
from imnet64.formats.label_status import label_status
from imnet64.formats.label_summary import LabelSummary, LabelTiming
from imnet64.formats.tfrecord_schema import parse_labeled
from imnet64.label.image_decode import decode_image
from imnet64.label.inputs import open_inputs
from imnet64.label.options import LabelOptions
from imnet64.label.run import PROBABILITY_TOLERANCE as TOLERANCE
from imnet64.label.run import plan_shard, read_csv_rows, run
from imnet64.pipeline.sample_images import write_sample

import numpy as np
import pytest
from PIL import Image

CAT_IDS = set(range(282, 295))  # tabby .. cheetah: the domestic and big cats (1001-class ids)


@pytest.fixture(scope="module")
def teacher():
    from imnet64.teacher import load_teacher

    return load_teacher("offline")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """36 real 64x64 photos in three sub-folders."""
    root = tmp_path_factory.mktemp("photos")
    write_sample(root, 36, per_folder=12)
    return root


def records_of(out_dir: Path, index: int = 0, count: int = 1):
    import tensorflow as tf

    path = part_paths(out_dir, index, count).tfrecord
    return [parse_labeled(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


def labels_of(out_dir: Path, count: int = 1) -> dict[str, tuple[int, float]]:
    out = {}
    for i in range(count):
        for r in records_of(out_dir, i, count):
            assert r.filename not in out, f"{r.filename} labeled twice"
            out[r.filename] = (r.label, r.confidence)
    return out


def label(input_path, out_dir, teacher, *, index=0, count=1, **options):
    options.setdefault("batch_size", 8)
    return run(input_path, out_dir, LabelOptions(teacher_spec="offline", **options),
               index=index, count=count, teacher=teacher)


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under root: sha256 of files, link targets, 'dir' for folders."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


def test_two_shards_cover_every_input_once_with_the_labels_of_one(photos, teacher, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    summary, skipped = label(photos, one, teacher)
    assert not skipped
    assert summary["inputs"] == summary["labeled"] == 36 and summary["rejected"] == 0
    whole = labels_of(one)
    sizes = []
    for index in range(2):
        s, _ = label(photos, two, teacher, index=index, count=2, batch_size=5)
        sizes.append(s["inputs"])
        assert s["inputs"] == s["labeled"] + s["rejected"]
    split = labels_of(two, count=2)
    assert sizes == [18, 18] and sum(sizes) == len(whole)
    assert split.keys() == whole.keys()
    # the promise across shardings (other batch compositions): same labels, probabilities
    # within PROBABILITY_TOLERANCE (TF's CPU kernels round with the batch around each image)
    whole_records = {r.filename: r for r in records_of(one)}
    split_records = {r.filename: r for i in range(2) for r in records_of(two, i, 2)}
    for name, (label_id, conf) in whole.items():
        a, b = whole_records[name], split_records[name]
        assert split[name][0] == label_id or a.topk_probs[0] - a.topk_probs[1] < TOLERANCE
        assert split[name][1] == pytest.approx(conf, abs=TOLERANCE)
        assert b.topk_probs == pytest.approx(a.topk_probs, abs=TOLERANCE)
    # real photos get real labels: the cat crops are cats, the coffee cups consomme/espresso...
    cats = [label_id for name, (label_id, _) in whole.items() if "chelsea" in name]
    assert cats and all(c in CAT_IDS for c in cats)
    cups = {label_id for name, (label_id, _) in whole.items() if "coffee" in name}
    assert cups <= {926, 968, 969, 505}  # consomme, cup, espresso, coffee mug
    # records carry the original bytes, untouched
    rec = records_of(one)[0]
    assert rec.encoded == (photos / rec.filename).read_bytes()
    assert (rec.height, rec.width, rec.image_format) == (64, 64, "png")
    assert len(rec.topk_ids) == 5 and rec.topk_ids[0] == rec.label
    assert rec.topk_probs == tuple(sorted(rec.topk_probs, reverse=True))
    # the probabilities are exactly the seed's: its tf.data preprocessing image by image
    # (decode_png, convert_image_dtype, resize 224), then the teacher and a softmax
    import tensorflow as tf

    first = records_of(one)[:6]
    seed_pixels = tf.stack([
        tf.image.resize(tf.image.convert_image_dtype(
            tf.io.decode_png(tf.io.read_file(str(photos / r.filename)), channels=3),
            tf.float32), (224, 224))
        for r in first
    ])
    seed_probs = tf.nn.softmax(teacher.logits(seed_pixels)).numpy()
    for r, probs in zip(first, seed_probs):  # a batch of 6 there, of 8 here
        assert r.label == int(probs.argmax())
        assert r.confidence == pytest.approx(float(probs.max()), abs=TOLERANCE)
    # CSV mirrors the TFRecord
    rows = read_csv_rows(part_paths(one, 0, 1).csv)
    assert [(r[0], r[1]) for r in rows] == [(k, v[0]) for k, v in whole.items()]
    assert rows[0][2] == teacher.class_names[rows[0][1]]


def test_folder_list_and_tar_inputs_give_the_same_labels(photos, teacher, tmp_path):
    names = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.png"))[:20]
    # a list file next to the images: names relative to its folder, like the folder's
    listing = photos / "twenty.txt"
    listing.write_text("\n".join(names) + "\n")
    archive = tmp_path / "twenty.tar"
    with tarfile.open(archive, "w") as tar:
        for name in names:
            tar.add(photos / name, arcname=name)
    folder_copy = tmp_path / "folder"
    for name in names:
        (folder_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (folder_copy / name).write_bytes((photos / name).read_bytes())
    results = {}
    for kind, source in (("folder", folder_copy), ("list", listing), ("tar", archive)):
        summary, _ = label(source, tmp_path / f"out-{kind}", teacher, batch_size=7,
                           export_dir=tmp_path / f"classes-{kind}")
        assert summary["input_kind"] == kind and summary["labeled"] == 20
        results[kind] = labels_of(tmp_path / f"out-{kind}")
    listing.unlink()
    assert list(results["folder"]) == names
    assert results["folder"] == results["list"] == results["tar"]
    recs = {k: records_of(tmp_path / f"out-{k}") for k in ("folder", "tar")}
    assert [r.encoded for r in recs["folder"]] == [r.encoded for r in recs["tar"]]
    # --export-folders: links for files on disk; tar members cannot be linked, so copies
    for kind in ("folder", "list", "tar"):
        entries = sorted(p for p in (tmp_path / f"classes-{kind}").rglob("*.png"))
        assert len(entries) == 20
        assert all(p.is_symlink() == (kind != "tar") for p in entries)
        assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in entries) == sorted(
            hashlib.sha256((photos / n).read_bytes()).hexdigest() for n in names
        )


# ---------------------------------------------------------------- the zoo of odd inputs


def _png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png16_rgb(rgb8: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), samples = 8-bit value * 257."""
    h, w, _ = rgb8.shape
    samples = (rgb8.astype(">u2") * 257).reshape(h, w * 3)
    raw = b"".join(b"\0" + row.tobytes() for row in samples)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def _png_bomb() -> bytes:
    """A valid PNG header claiming 100000 x 100000 pixels, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0"))
            + _chunk(b"IEND", b""))


def make_zoo(root: Path, photos: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Odd inputs under root. Returns ({name: reject reason fragment}, {name: what it is})
    for the inputs; non-inputs (hidden, .txt) are made too and must not be counted."""
    cat_png = next(photos.rglob("chelsea_0000.png"))
    cat = Image.open(cat_png).convert("RGB")
    big_photo = Image.open(next(photos.rglob("coffee_0000.png"))).convert("RGB")
    root.mkdir(parents=True)
    sub = root / "sub dir"
    sub.mkdir()
    rejected = {
        "truncated.png": "truncated",
        "empty.png": "empty file",
        "text.png": "not an image",
        "random.jpg": "not an image",
        "broken-link.png": "broken symbolic link",
        "loop.png": "Too many levels of symbolic links",
        "fifo.png": "not a regular file",
        "bomb.png": "too large",
        "bad-header.png": "corrupt PNG file",
        "bad-data.png": "corrupt or truncated",
    }
    labeled = {
        "cat.png": "the cat crop as is",
        "cat rgba.png": "RGBA",
        "cat16.png": "16-bit RGB",
        "cat-palette.png": "palette with transparency",
        "cat-gray.png": "grayscale",
        "cat-gray16.png": "16-bit grayscale",
        "cat.jpg": "JPEG",
        "cat-cmyk.jpg": "CMYK JPEG",
        "cat.bmp": "BMP",
        "cat.gif": "animated GIF",
        "UPPER.PNG": "upper-case suffix",
        "sub dir/chat été 猫.png": "spaces and non-ASCII",
        "wide-100x80.png": "not 64x64",
        "sub dir/" + os.fsdecode(b"latin1-\xe9t\xe9.png"): "a name that is not UTF-8",
        "symlink-to-cat.png": "a working symlink",
    }
    data = cat_png.read_bytes()
    (root / "cat.png").write_bytes(data)
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("this is a text file, not a PNG\n")
    (root / "random.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    os.symlink(root / "deleted.png", root / "broken-link.png")
    os.symlink("loop.png", root / "loop.png")
    # as root, chmod 000 does not stop reads: a FIFO is the unreadable file here (it would
    # block a naive open() forever)
    os.mkfifo(root / "fifo.png")
    (root / "bomb.png").write_bytes(_png_bomb())
    header = bytearray(data)
    header[37:41] = b"XXXX"  # the first chunk after IHDR gets a nonsense type
    (root / "bad-header.png").write_bytes(bytes(header))
    body = bytearray(data)
    body[len(body) // 2 : len(body) // 2 + 64] = bytes(64)  # zeros inside the IDAT stream
    (root / "bad-data.png").write_bytes(bytes(body))
    rgba = cat.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(cat.size))
    (root / "cat rgba.png").write_bytes(_png_bytes(rgba))
    (root / "cat16.png").write_bytes(_png16_rgb(np.asarray(cat)))
    pal = cat.quantize(64)
    pal.info["transparency"] = 0
    (root / "cat-palette.png").write_bytes(_png_bytes(pal, transparency=0))
    gray = cat.convert("L")
    (root / "cat-gray.png").write_bytes(_png_bytes(gray))
    (root / "cat-gray16.png").write_bytes(
        _png_bytes(Image.fromarray(np.asarray(gray).astype(np.uint16) * 257))
    )
    cat.save(root / "cat.jpg", quality=95)
    cat.convert("CMYK").save(root / "cat-cmyk.jpg", quality=95)
    cat.save(root / "cat.bmp")
    cat.save(root / "cat.gif", save_all=True, append_images=[gray.convert("RGB")], duration=50)
    (root / "UPPER.PNG").write_bytes(data)
    (sub / "chat été 猫.png").write_bytes(data)
    (root / "wide-100x80.png").write_bytes(_png_bytes(big_photo.resize((100, 80))))
    (sub / os.fsdecode(b"latin1-\xe9t\xe9.png")).write_bytes(data)
    os.symlink(root / "cat.png", root / "symlink-to-cat.png")
    # not inputs: hidden files, a hidden folder, non-image names, an empty folder
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "._cat.png").write_bytes(b"AppleDouble junk")
    (root / "README.txt").write_text("hello")
    (root / "empty folder").mkdir()
    return rejected, labeled


def test_zoo_of_odd_inputs_is_all_accounted_for(photos, teacher, tmp_path):
    zoo = tmp_path / "zoo"
    rejected, labeled = make_zoo(zoo, photos)
    assert len(rejected) + len(labeled) >= 24
    before = tree_digest(zoo)
    summary, _ = label(zoo, tmp_path / "out", teacher, batch_size=4)
    assert summary["inputs"] == len(rejected) + len(labeled)
    assert summary["inputs"] == summary["labeled"] + summary["rejected"]
    reasons = {r["path"]: r["reason"] for r in summary["rejects"]}
    assert set(reasons) == set(rejected), reasons
    for name, fragment in rejected.items():
        assert fragment in reasons[name], (name, reasons[name])
    records = {r.filename: r for r in records_of(tmp_path / "out")}
    assert set(records) == set(labeled)
    cat = records["cat.png"]
    assert cat.label in CAT_IDS
    # conversions that keep the 8-bit RGB pixels give exactly the cat's pixels, hence its
    # label and (elsewhere in a batch) its probabilities within the tolerance
    def pixels(name: str) -> np.ndarray:
        return decode_image((zoo / name).read_bytes()).image

    for same in ("cat rgba.png", "cat16.png", "UPPER.PNG", "symlink-to-cat.png", "cat.bmp",
                 "sub dir/chat été 猫.png", "sub dir/" + os.fsdecode(b"latin1-\xe9t\xe9.png")):
        assert (pixels(same) == pixels("cat.png")).all(), same
        assert records[same].label == cat.label
        assert records[same].topk_probs == pytest.approx(cat.topk_probs, abs=TOLERANCE)
    assert (pixels("cat-gray16.png") == pixels("cat-gray.png")).all()
    assert records["cat-gray16.png"].topk_probs == pytest.approx(
        records["cat-gray.png"].topk_probs, abs=TOLERANCE)
    for near in ("cat.jpg", "cat-palette.png", "cat.gif", "cat-cmyk.jpg"):
        assert records[near].label in CAT_IDS, near
    wide = records["wide-100x80.png"]
    assert (wide.width, wide.height) == (100, 80)
    assert records["cat16.png"].encoded == (zoo / "cat16.png").read_bytes()
    assert records["cat.jpg"].image_format == "jpeg"
    # the non-UTF-8 name is escaped in the CSV, which stays valid UTF-8
    csv_text = part_paths(tmp_path / "out", 0, 1).csv.read_bytes().decode("utf-8")
    assert "sub dir/latin1-\\xe9t\\xe9.png," in csv_text
    assert tree_digest(zoo) == before


def test_hostile_tar_every_member_is_labeled_or_rejected(photos, teacher, tmp_path):
    from test_label_inputs import hostile_tar

    pngs = sorted(photos.rglob("*.png"))
    archive = tmp_path / "hostile.tar"
    expected = hostile_tar(archive, pngs[0].read_bytes(), pngs[1].read_bytes())
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if not m.isdir()]
    summary, _ = label(archive, tmp_path / "out", teacher, batch_size=4)
    assert summary["inputs"] == len(members) == len(expected)
    assert summary["inputs"] == summary["labeled"] + summary["rejected"]
    assert summary["labeled"] == sum(v is None for v in expected.values())
    reasons = [r["reason"] for r in summary["rejects"]]
    assert sum("unsafe path in archive" in r for r in reasons) == 4
    by_path = {r["path"]: r["reason"] for r in summary["rejects"]}
    assert by_path["../evil.png"] == "unsafe path in archive (..)"
    assert by_path["/abs.png"] == "unsafe path in archive (absolute)"
    records = records_of(tmp_path / "out")
    assert len(records) == summary["labeled"]
    assert not [r.filename for r in records if ".." in r.filename.split("/")]


def test_export_folders_links_or_copies_and_leaves_inputs_unchanged(photos, teacher, tmp_path):
    before = tree_digest(photos)
    export = tmp_path / "classes"
    summary, _ = label(photos, tmp_path / "out", teacher, export_dir=export)
    assert tree_digest(photos) == before  # not one input moved, renamed or changed
    links = [p for p in export.rglob("*") if p.is_symlink()]
    assert len(links) == summary["labeled"] == 36
    for link in links:
        target = Path(os.readlink(link))
        assert target.is_absolute() and target.is_file()
        assert photos in target.parents
    rows = {r[0]: r for r in read_csv_rows(part_paths(tmp_path / "out", 0, 1).csv)}
    some = next(n for n in rows if "chelsea" in n)
    label_id, class_name = rows[some][1], rows[some][2]
    from imnet64.formats.class_names import safe_folder_name

    entry = export / safe_folder_name(class_name, label_id) / some.replace("/", "__")
    assert entry.is_symlink() and entry.resolve() == (photos / some).resolve()

    # a re-run with --copy (shard already done: no relabeling) replaces links by copies
    summary2, skipped = run(photos, tmp_path / "out", LabelOptions(
        teacher_spec="/no/teacher/needed", export_dir=export, copy=True), index=0, count=1)
    assert skipped and summary2 == summary
    assert not [p for p in export.rglob("*") if p.is_symlink()]
    assert entry.read_bytes() == (photos / some).read_bytes()
    assert tree_digest(photos) == before

    # OUT_DIR or the export inside INPUT would be read back as input: refused
    with pytest.raises(UserError, match="inside INPUT"):
        label(photos, tmp_path / "x", teacher, export_dir=photos / "classes")


def test_rerun_skips_fast_and_force_redoes(photos, teacher, tmp_path):
    out = tmp_path / "out"
    first, skipped = label(photos, out, teacher, index=1, count=3)
    assert not skipped and first["inputs"] == 12
    summary_file = part_paths(out, 1, 3).summary
    stamp = summary_file.stat().st_mtime_ns
    start = time.monotonic()
    # a teacher that cannot load proves the skip never touches it
    again, skipped = run(photos, out, LabelOptions(teacher_spec="/no/such/teacher"),
                         index=1, count=3)
    assert skipped and again == first and time.monotonic() - start < 2.0
    assert summary_file.stat().st_mtime_ns == stamp
    redone, skipped = label(photos, out, teacher, index=1, count=3, force=True)
    assert not skipped and summary_file.stat().st_mtime_ns != stamp
    assert {k: redone[k] for k in ("inputs", "labeled", "files")} == {
        k: first[k] for k in ("inputs", "labeled", "files")
    }
    # inputs changed since: a summary for other inputs is not silently overwritten
    extra = photos / "000" / "zz-new.png"
    extra.write_bytes((photos / "000" / sorted(os.listdir(photos / "000"))[0]).read_bytes())
    try:
        with pytest.raises(UserError, match="--force"):
            run(photos, out, LabelOptions(teacher_spec="/no/such/teacher"), index=1, count=3)
    finally:
        extra.unlink()


def test_same_shard_twice_gives_byte_identical_part_files(photos, teacher, tmp_path):
    out = tmp_path / "out"
    first, _ = label(photos, out, teacher, index=0, count=2)
    paths = part_paths(out, 0, 2)
    files = (paths.tfrecord, paths.csv, paths.summary)
    before = [p.read_bytes() for p in files]
    again, skipped = label(photos, out, teacher, index=0, count=2, force=True)
    assert not skipped
    assert [p.read_bytes() for p in files] == before  # the .json too: no timings inside
    # the timings live beside the part files, and everyone who shows them still can
    assert again["seconds"] > 0 and again["images_per_second"] > 0
    assert paths.timing.is_file() and "images_per_second" in paths.timing.read_text()
    assert read_summary(paths.summary)["images_per_second"] > 0
    assert label_status(out, 2).totals()["shard_seconds"] > 0


def test_file_names_that_are_not_utf8_are_escaped_in_the_csv(photos, teacher, tmp_path):
    cat = next(photos.rglob("chelsea_0000.png")).read_bytes()
    folder = tmp_path / "names"
    folder.mkdir()
    odd = [os.fsdecode(b"caf\xe9.png"), "back\\slash.png", "plain.png", "new\nline.png"]
    for name in odd:
        (folder / name).write_bytes(cat)
    (folder / os.fsdecode(b"bad-\xff.png")).write_bytes(b"not an image")
    summary, _ = label(folder, tmp_path / "out", teacher, batch_size=4)
    assert (summary["labeled"], summary["rejected"]) == (4, 1)
    csv_bytes = part_paths(tmp_path / "out", 0, 1).csv.read_bytes()
    text = csv_bytes.decode("utf-8")  # valid UTF-8, strictly
    assert "caf\\xe9.png," in text and "back\\\\slash.png," in text
    assert "new\\x0aline.png," in text and len(text.splitlines()) == 1 + 4  # one row each
    # and it round-trips: read_csv_rows gives back the names exactly as on disk
    rows = read_csv_rows(part_paths(tmp_path / "out", 0, 1).csv)
    assert sorted(r[0] for r in rows) == sorted(odd)
    assert all((folder / r[0]).is_file() for r in rows)
    # the summary's names use the same escape
    assert [r["path"] for r in summary["rejects"]] == ["bad-\\xff.png"]
    json_text = part_paths(tmp_path / "out", 0, 1).summary.read_bytes().decode("utf-8")
    assert "bad-\\\\xff.png" in json_text


def test_large_files_are_read_again_for_their_record_not_held(photos, teacher, tmp_path):
    from imnet64.label.run import KEEP_ENCODED_BYTES

    folder = tmp_path / "big"
    folder.mkdir()
    noise = np.random.default_rng(1).integers(0, 256, (330, 330, 3), np.uint8)
    (folder / "big.png").write_bytes(_png_bytes(Image.fromarray(noise)))
    assert (folder / "big.png").stat().st_size > KEEP_ENCODED_BYTES
    (folder / "small.png").write_bytes(next(photos.rglob("chelsea_0000.png")).read_bytes())
    summary, _ = label(folder, tmp_path / "out", teacher, batch_size=2)
    assert summary["labeled"] == 2
    for record in records_of(tmp_path / "out"):
        assert record.encoded == (folder / record.filename).read_bytes()


def test_a_large_file_changed_before_its_record_is_written_is_rejected(tmp_path):
    from imnet64.label.inputs import InputReadError
    from imnet64.label.run import _digest, _read_again, _ReadAgain

    path = tmp_path / "x.png"
    path.write_bytes(b"first version")
    inputs = open_inputs(tmp_path)
    want = _ReadAgain(len(b"first version"), _digest(b"first version"))
    assert _read_again(inputs, 0, want) == b"first version"
    path.write_bytes(b"other version")  # same size, other bytes
    with pytest.raises(InputReadError, match="changed while it was being labeled"):
        _read_again(inputs, 0, want)


def test_label_status_counts_done_partial_missing(photos, teacher, tmp_path):
    out = tmp_path / "out"
    s0, _ = label(photos, out, teacher, index=0, count=4)
    label(photos, out, teacher, index=2, count=4)
    part_paths(out, 2, 4).summary.unlink()  # parts without summary: e.g. killed at the end
    status = label_status(out)  # shard count inferred from the file names
    assert [s.state for s in status.shards] == ["done", "missing", "partial", "missing"]
    t = status.totals()
    assert (t["done"], t["partial"], t["missing"]) == (1, 1, 2)
    assert (t["inputs"], t["labeled"], t["rejected"]) == (s0["inputs"], s0["labeled"], 0)
    assert t["total_inputs"] == 36 and not status.complete
    for index in (1, 2, 3):
        label(photos, out, teacher, index=index, count=4)
    status = label_status(out, 4)
    assert status.complete and status.totals()["labeled"] == 36
    with pytest.raises(UserError, match="num-shards"):
        label_status(tmp_path)  # no labels folder: cannot infer


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(folder, "ro"|"rw"): a tmpfs mounted (or remounted) there; unmounted after.

    As root, chmod does not stop writes: a read-only mount is the real read-only folder."""
    import subprocess

    mounted: list[Path] = []

    def mount(folder: Path, mode: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if folder in mounted:
            cmd = ["mount", "-o", f"remount,{mode}", str(folder)]
        else:
            cmd = ["mount", "-t", "tmpfs", "-o", f"{mode},size=64m", "tmpfs", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
        if folder not in mounted:
            mounted.append(folder)

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_out_dir_is_a_one_line_error_and_a_done_shard_still_skips(
        photos, teacher, tmp_path, mount_tmpfs):
    ro = tmp_path / "ro"
    mount_tmpfs(ro, "ro")
    with pytest.raises(UserError) as e:
        label(photos, ro / "out", teacher)
    assert str(e.value) == (f"cannot write label outputs to {ro}/out/labels: "
                            "Read-only file system")
    # labeled while writable, then read-only: the done shard is skipped, a redo refused
    rw = tmp_path / "rw"
    mount_tmpfs(rw, "rw")
    first, _ = label(photos, rw, teacher, index=2, count=3)
    mount_tmpfs(rw, "ro")
    again, skipped = label(photos, rw, teacher, index=2, count=3)
    assert skipped and again == first
    with pytest.raises(UserError, match="Read-only file system"):
        label(photos, rw, teacher, index=2, count=3, force=True)
    with pytest.raises(UserError, match=f"cannot write --export-folders to {ro}/classes: "):
        label(photos, rw, teacher, index=2, count=3, export_dir=ro / "classes")


def test_plan_refuses_bad_shards(photos, tmp_path):
    with pytest.raises(UserError, match="not in 0..1"):
        plan_shard(photos, tmp_path, 2, 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no image files"):
        plan_shard(empty, tmp_path / "out", 0, 1)


def test_summary_and_timing_files_are_their_typed_records_as_json(photos, teacher, tmp_path):
    label(photos, tmp_path / "out", teacher, index=0, count=3)
    paths = part_paths(tmp_path / "out", 0, 3)
    for path, record in ((paths.summary, LabelSummary), (paths.timing, LabelTiming)):
        text = path.read_text("utf-8")
        again = record.from_json(json.loads(text)).to_json()
        assert json.dumps(again, indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text
