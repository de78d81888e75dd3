"""BatchReader: full batches in input order whatever is rejected; errors and early exits."""

from __future__ import annotations

import threading
import time

from imnet64.batch_reader import BatchReader

import numpy as np
import pytest

SHAPE = (2, 2, 3)


def _image(i: int) -> np.ndarray:
    return np.full(SHAPE, i % 256, np.uint8)


def test_survivors_in_order_in_full_batches():
    rejected = {0, 3, 4, 5, 17, 22}
    with BatchReader(23, lambda i: None if i in rejected else _image(i), 4, threads=3) as reader:
        batches = list(reader)
    kept = [i for i in range(23) if i not in rejected]
    assert [len(b[0]) for b in batches] == [4, 4, 4, 4, 1]  # 17 survivors
    assert np.concatenate([b[0] for b in batches]).tolist() == kept
    for indices, images in batches:
        assert images.dtype == np.uint8 and images.shape[1:] == SHAPE
        assert images[:, 0, 0, 0].tolist() == indices.tolist()


def test_everything_rejected_gives_no_batch():
    with BatchReader(10, lambda i: None, 4) as reader:
        assert list(reader) == []


def test_an_error_in_the_reader_reaches_the_consumer():
    def load(i: int):
        if i == 9:
            raise OSError("disk on fire")
        return _image(i)

    with pytest.raises(OSError, match="disk on fire"), BatchReader(20, load, 4) as r:
        list(r)


def test_leaving_early_stops_the_reader():
    loaded = []

    def load(i: int):
        loaded.append(i)
        return _image(i)

    with BatchReader(10_000, load, 8, ahead=2) as reader:
        next(iter(reader))
    time.sleep(0.3)
    assert len(loaded) < 100  # read ahead by a few batches, not the whole input
    assert not [t for t in threading.enumerate() if t.name == "imnet64-batch-reader"]
