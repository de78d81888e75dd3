"""formats.shard_check, the one shard verifier: what each depth ("size", "sha256", "full")
finds in a real TFRecord shard that was left intact, flipped, truncated, miscounted,
deleted or replaced by a folder. The callers' wording (inspect --verify, train's damaged
shard errors, shard-records' resume) is tested with them."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.formats.manifest import ShardInfo
from imnet64.formats.shard_check import check_shard

import pytest

DEPTHS = ("size", "sha256", "full")
RECORDS = 5


@pytest.fixture
def shard(tmp_path) -> ShardInfo:
    """A shard of RECORDS records written by TensorFlow, and its manifest entry as
    shard-records would record it (measured here independently of shard_check)."""
    import tensorflow as tf

    path = tmp_path / "train-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(RECORDS):
            writer.write(bytes([i]) * (100 + i))
    data = path.read_bytes()
    return ShardInfo(path.name, RECORDS, len(data), hashlib.sha256(data).hexdigest())


def _found(root: Path, shard: ShardInfo) -> dict[str, bool]:
    return {depth: check_shard(root, shard, depth).ok for depth in DEPTHS}


def test_an_intact_shard_passes_every_depth_and_reports_what_it_measured(tmp_path, shard):
    full = check_shard(tmp_path, shard, "full")
    assert (full.size, full.sha256, full.records) == (shard.bytes, shard.sha256, RECORDS)
    assert full.regular_file and full.error is None and full.why_unreadable is None
    assert _found(tmp_path, shard) == {"size": True, "sha256": True, "full": True}
    # a cheaper depth does not read what it does not check
    assert check_shard(tmp_path, shard, "size").sha256 is None
    assert check_shard(tmp_path, shard, "sha256").records is None


def test_a_flipped_byte_passes_the_size_check_only(tmp_path, shard):
    path = tmp_path / shard.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert _found(tmp_path, shard) == {"size": True, "sha256": False, "full": False}
    found = check_shard(tmp_path, shard, "sha256")
    assert not found.sha256_ok and found.sha256 == hashlib.sha256(data).hexdigest()


def test_a_miscounted_entry_is_found_only_by_counting_records(tmp_path, shard):
    miscounted = replace(shard, examples=RECORDS + 1)
    assert _found(tmp_path, miscounted) == {"size": True, "sha256": True, "full": False}
    found = check_shard(tmp_path, miscounted, "full")
    assert found.records == RECORDS and not found.records_ok


def test_a_truncated_shard_fails_every_depth_and_names_the_cut_record(tmp_path, shard):
    path = tmp_path / shard.file
    path.write_bytes(path.read_bytes()[:-10])
    assert _found(tmp_path, shard) == {"size": False, "sha256": False, "full": False}
    found = check_shard(tmp_path, shard, "full")
    assert found.size == shard.bytes - 10 and found.records is None
    assert "truncated record" in str(found.record_error)


def test_a_missing_shard_is_unreadable_at_every_depth(tmp_path, shard):
    (tmp_path / shard.file).unlink()
    assert _found(tmp_path, shard) == {"size": False, "sha256": False, "full": False}
    found = check_shard(tmp_path, shard, "full")
    assert not found.regular_file and found.size is None
    assert found.why_unreadable == "No such file or directory"


def test_a_folder_in_a_shards_place_is_no_regular_file_and_cannot_be_hashed(tmp_path, shard):
    path = tmp_path / shard.file
    path.unlink()
    path.mkdir()
    size_only = check_shard(tmp_path, shard, "size")
    assert not size_only.regular_file and size_only.error is None  # a stat reads a folder
    hashed = check_shard(tmp_path, shard, "sha256")
    assert hashed.why_unreadable == "Is a directory" and not hashed.ok
