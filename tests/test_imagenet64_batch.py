"""The official ImageNet64 batch files read in place (formats.imagenet64_batch,
label.batch_files): layouts, names, and every refusal as one `error:` line."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

from imnet64.formats.byte_sources import FileSource
from imnet64.formats.imagenet64_batch import BatchFormatError, hwc_to_planes, read_batch_file
from imnet64.formats.imagenet64_classes import teacher_index
from imnet64.label.batch_files import open_batch_files
from imnet64.label.image_decode import decode_image
from imnet64.label.inputs import open_inputs, shard_range

import numpy as np
import pytest
from imagenet64_support import (
    batch_dict,
    known_photo_images,
    official_rows,
    pickle_bytes,
    write_download_zip,
    write_npz,
    write_pickle,
)
from imnet64_cli.main import main


def random_images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def photos() -> tuple[list[np.ndarray], list[int]]:
    return known_photo_images()


def test_official_rows_are_planes_and_our_inverse_agrees(photos):
    images, _ = photos
    rows = official_rows(images)
    assert rows.shape == (len(images), 12288)
    # the first 4096 values are the red plane, row-major
    assert np.array_equal(rows[0, :4096].reshape(64, 64), images[0][:, :, 0])
    assert np.array_equal(rows[0, 8192:].reshape(64, 64), images[0][:, :, 2])
    assert np.array_equal(hwc_to_planes(images[0]), rows[0])


def test_python3_protocol2_pickle_is_refused_with_a_way_out(tmp_path):
    # Python 3 at protocol 2 writes bytes as a call to _codecs.encode on text: not a range
    # of the file we could read rows from
    path = write_pickle(tmp_path / "val_data", batch_dict(random_images(1), [1]), 2)
    with pytest.raises(BatchFormatError, match="re-save with pickle protocol 3"):
        read_batch_file("val_data", FileSource(path))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_pickle_rows_and_labels_round_trip(tmp_path, photos, protocol):
    images, labels = photos
    d = batch_dict(images, labels)
    path = write_pickle(tmp_path / "train_data_batch_1", d, protocol)
    batch = read_batch_file("train_data_batch_1", FileSource(path))
    assert batch.rows == len(images) and batch.has_mean
    assert list(batch.labels) == labels
    for i, img in enumerate(images):
        assert np.array_equal(batch.image(i), img)


def test_python2_protocol2_pickle_is_read(tmp_path):
    """A pickle as Python 2 writes it (protocol 2): byte-string keys and pixels as
    SHORT_BINSTRING/BINSTRING, numpy.core names. Assembled opcode by opcode."""
    images = random_images(2)
    raw = official_rows(images).tobytes()

    def binstring(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (
            b"T" + len(b).to_bytes(4, "little") + b)

    p = (b"\x80\x02}q\x00(" + binstring(b"data")
         + b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85"
         + binstring(b"b") + b"\x87Rq\x03(K\x01K\x02M\x000\x86cnumpy\ndtype\nq\x04"
         + binstring(b"u1") + b"K\x00K\x01\x87Rq\x05(K\x03" + binstring(b"|")
         + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + binstring(raw) + b"tb"
         + binstring(b"labels") + b"]q\x06(K\x07M\xe8\x03e" + b"u.")
    path = tmp_path / "val_data"
    path.write_bytes(p)
    batch = read_batch_file("val_data", FileSource(path))
    assert list(batch.labels) == [7, 1000] and not batch.has_mean
    assert np.array_equal(batch.image(1), images[1])


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_rows_and_labels_round_trip(tmp_path, photos, compressed):
    images, labels = photos
    path = write_npz(tmp_path / "train_data_batch_2.npz", batch_dict(images, labels), compressed)
    inputs = open_inputs(path)
    assert inputs.kind == "imagenet64" and len(inputs) == len(images)
    for i, img in enumerate(images):
        assert np.array_equal(decode_image(inputs.read(i)).image, img)
        assert inputs.truth(i) == teacher_index(labels[i])


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_download_zip_folder_and_names(tmp_path, compression):
    a, b, c = random_images(3, 1), random_images(2, 2), random_images(4, 3)
    files = {
        "train_data_batch_1": pickle_bytes(batch_dict(a, [1, 2, 3])),
        "train_data_batch_10": pickle_bytes(batch_dict(b, [4, 5])),
        "train_data_batch_2": pickle_bytes(batch_dict(c, [6, 7, 8, 9])),
    }
    z = write_download_zip(tmp_path / "Imagenet64_train_part1.zip", files,
                           "Imagenet64_train_part1/", compression)
    inputs = open_inputs(z)
    assert inputs.kind == "imagenet64"
    # names sort as strings (1, 10, 2), rows numbered from 0 with six digits
    assert list(inputs.names) == [
        "train_data_batch_1/000000", "train_data_batch_1/000001", "train_data_batch_1/000002",
        "train_data_batch_10/000000", "train_data_batch_10/000001",
        "train_data_batch_2/000000", "train_data_batch_2/000001", "train_data_batch_2/000002",
        "train_data_batch_2/000003"]
    want = a + b + c
    # a shard sees exactly its rows
    start, stop = shard_range(len(inputs), 1, 2)
    shard = inputs.subset(start, stop)
    assert list(shard.names) == list(inputs.names)[start:stop]
    for j in range(len(shard)):
        assert np.array_equal(decode_image(shard.read(j)).image, want[start + j])
    assert [shard.truth(j) for j in range(len(shard))] == [
        teacher_index(v) for v in [1, 2, 3, 4, 5, 6, 7, 8, 9][start:stop]]
    # the same files unpacked into a folder, with the zip beside them: the same inputs
    folder = tmp_path / "unpacked"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    assert list(open_inputs(folder).names) == list(inputs.names)


def test_a_folder_holding_the_same_batch_twice_is_refused(tmp_path):
    d = batch_dict(random_images(1), [1])
    write_pickle(tmp_path / "val_data", d)
    write_npz(tmp_path / "val_data.npz", d)
    with pytest.raises(Exception, match="both hold val_data"):
        open_batch_files(tmp_path)


class CodePayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its error line must say)."""
    images, marker = random_images(3), tmp_path / "PWNED"
    good = pickle_bytes(batch_dict(images, [1, 2, 3]))
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes, says: str) -> None:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "train_data_batch_1").write_bytes(data)
        out[name] = (folder / "train_data_batch_1", says)

    put("payload", pickle.dumps({"data": CodePayload(marker), "labels": [1]}, protocol=3),
        "refused: the pickle asks to call posix.system")
    put("truncated_in_pixels", good[:20000], "truncated")
    put("truncated_at_end", good[:-3], "truncated")
    put("row_width", pickle_bytes({"data": np.zeros((3, 3072), np.uint8), "labels": [1, 2, 3]}),
        "3072 values wide, not 12288")
    put("label_zero", pickle_bytes(batch_dict(images, [0, 2, 3])), "outside 1..1000")
    put("label_1001", pickle_bytes(batch_dict(images, [1, 1001, 3])), "outside 1..1000")
    put("label_count", pickle_bytes(batch_dict(images, [1, 2])),
        "'labels' has 2 entries but 'data' has 3 rows")
    npz = tmp_path / "npz_label_count"
    npz.mkdir()
    write_npz(npz / "val_data.npz", batch_dict(images, [1, 2, 3, 4][:2]) | {
        "labels": np.array([1, 2])})
    out["npz_label_count"] = (npz / "val_data.npz", "'labels' has 2 entries")
    return out


def test_bad_batch_files_give_one_error_line_exit_2_and_write_nothing(tmp_path, capsys):
    for name, (path, says) in _bad_files(tmp_path).items():
        out_dir = tmp_path / f"out_{name}"
        code = main(["label", str(path), str(out_dir), "--teacher", "offline"])
        _, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert str(path) in lines[0] and says in lines[0], (name, lines[0])
        written = [p for p in out_dir.rglob("*") if p.is_file()] if out_dir.exists() else []
        assert written == [], (name, written)
    assert not (tmp_path / "PWNED").exists()  # the payload never ran


def test_the_demo_sample_is_an_official_file_of_known_classes(tmp_path):
    from imnet64.formats.class_names import imagenet_class_names
    from imnet64.pipeline.imagenet64_sample import write_imagenet64_sample

    train, val = write_imagenet64_sample(tmp_path, 40)
    names = imagenet_class_names()
    for path, rows in ((train, 30), (val, 10)):
        inputs = open_inputs(path)
        assert len(inputs) == rows
        assert {names[inputs.truth(i)] for i in range(rows)} == {
            "Egyptian cat", "espresso", "moped"}
    with open(train, "rb") as f:  # what the authors' loader sees (our own file: trusted)
        d = pickle.load(f)
    assert d["data"].shape == (30, 12288) and "mean" in d and min(d["labels"]) >= 1
