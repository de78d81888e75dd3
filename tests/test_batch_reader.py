"""BatchReader: full batches in input order whatever is rejected; errors and early exits."""

from __future__ import annotations

import threading
import time

from imnet64.label.batch_reader import BatchReader, ByteBudget
from imnet64.label.image_decode import DECODE_BYTES_PER_PIXEL
from imnet64.label.inputs import open_inputs
from imnet64.label.run import MAX_DECODE_SIDE, _loader, _SideTable

import numpy as np
import pytest
from PIL import Image

SHAPE = (2, 2, 3)


def _image(i: int) -> np.ndarray:
    return np.full(SHAPE, i % 256, np.uint8)


def test_survivors_in_order_in_full_batches():
    rejected = {0, 3, 4, 5, 17, 22}
    def load(i, reserve):
        return None if i in rejected else _image(i)

    with BatchReader(23, load, 4, threads=3) as reader:
        batches = list(reader)
    kept = [i for i in range(23) if i not in rejected]
    assert [len(b[0]) for b in batches] == [4, 4, 4, 4, 1]  # 17 survivors
    assert np.concatenate([b[0] for b in batches]).tolist() == kept
    for indices, images in batches:
        assert images.dtype == np.uint8 and images.shape[1:] == SHAPE
        assert images[:, 0, 0, 0].tolist() == indices.tolist()


def test_everything_rejected_gives_no_batch():
    with BatchReader(10, lambda i, reserve: None, 4) as reader:
        assert list(reader) == []


def test_an_error_in_the_reader_reaches_the_consumer():
    def load(i: int, reserve):
        if i == 9:
            raise OSError("disk on fire")
        return _image(i)

    with pytest.raises(OSError, match="disk on fire"), BatchReader(20, load, 4) as r:
        list(r)


def test_leaving_early_stops_the_reader():
    loaded = []

    def load(i: int, reserve):
        loaded.append(i)
        return _image(i)

    with BatchReader(10_000, load, 8, ahead=2) as reader:
        next(iter(reader))
    time.sleep(0.3)
    assert len(loaded) < 100  # read ahead by a few batches, not the whole input
    assert not [t for t in threading.enumerate() if t.name == "imnet64-batch-reader"]


class HeldBytes:
    """Counts, from outside the reader, the bytes every running load has been granted."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def wrap(self, load):
        def counted(i, reserve):
            mine = 0

            def counting_reserve(nbytes):
                nonlocal mine
                reserve(nbytes)  # may wait for the budget
                with self.lock:
                    mine += nbytes
                    self.now += nbytes
                    self.peak = max(self.peak, self.now)

            try:
                return load(i, counting_reserve)
            finally:
                with self.lock:
                    self.now -= mine

        return counted


def test_bytes_in_flight_stay_within_the_budget_with_many_threads(tmp_path):
    # large files and large decodes, as near-limit inputs are: noise PNGs (big files) and
    # smooth 1500x1500 ones (small files, 2.25 Mpx to decode), read by 8 threads
    rng = np.random.default_rng(0)
    costs = []
    for k in range(16):
        if k % 2:
            pixels = rng.integers(0, 256, (700, 700, 3), np.uint8)
        else:
            ramp = np.linspace(0, 255, 1500, dtype=np.uint8)
            pixels = np.dstack([np.add.outer(ramp, ramp // 2)] * 3).astype(np.uint8)
        path = tmp_path / f"{k:02d}.png"
        Image.fromarray(pixels).save(path)
        h, w = pixels.shape[:2]
        costs.append(path.stat().st_size + h * w * DECODE_BYTES_PER_PIXEL)
    inputs = open_inputs(tmp_path)
    budget = 40 * 2**20
    assert max(costs) < budget < sum(costs) / 4  # the budget must bite
    held = HeldBytes()
    side = _SideTable()
    load = held.wrap(_loader(inputs, side))
    with BatchReader(len(inputs), load, 8, threads=8, byte_budget=budget) as reader:
        batches = list(reader)
    assert sum(len(b[0]) for b in batches) == 16 and not side.rejects
    assert all(b[1].shape[1:] == (64, 64, 3) for b in batches)
    # what the loads held at once, counted outside the reader and by its own budget
    assert held.peak <= budget + max(costs), (held.peak, budget)
    assert reader.budget.peak <= budget + max(costs)
    assert held.peak >= max(costs)  # the loads did reserve what they hold
    # without a budget the same 8 threads hold far more at once
    free = HeldBytes()
    with BatchReader(len(inputs), free.wrap(_loader(inputs, _SideTable())), 8,
                     threads=8) as reader:
        list(reader)
    assert free.peak > budget + max(costs)
    assert MAX_DECODE_SIDE < 1500  # the smooth ones were shrunk too, inside the budget


def test_a_load_larger_than_the_budget_runs_alone_instead_of_waiting_forever():
    running, most = [], 0
    lock = threading.Lock()

    def load(i, reserve):
        nonlocal most
        reserve(10_000)  # each is 10x the budget
        with lock:
            running.append(i)
            most = max(most, len(running))
        time.sleep(0.01)
        reserve(5)
        with lock:
            running.remove(i)
        return _image(i)

    with BatchReader(12, load, 4, threads=4, byte_budget=1_000) as reader:
        batches = list(reader)
    assert np.concatenate([b[0] for b in batches]).tolist() == list(range(12))
    assert most == 1 and reader.budget.peak == 10_005


def test_byte_budget_lets_the_oldest_go_first():
    budget = ByteBudget(100)
    budget.begin(0)
    budget.begin(1)
    budget.reserve(1, 90)
    budget.reserve(0, 50)  # over the limit, but 0 is the oldest: it goes on at once
    assert (budget.in_flight, budget.peak) == (140, 140)
    done = threading.Event()

    def later():
        budget.reserve(1, 20)  # must wait for 0 to end
        done.set()

    t = threading.Thread(target=later)
    t.start()
    assert not done.wait(0.2)
    budget.end(0)
    assert done.wait(5)  # 1 is now the oldest: 110 > 100 is allowed to it alone
    t.join()
    budget.end(1)
    assert budget.in_flight == 0


# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's RSS (here pytest's, with
# TensorFlow and the teacher loaded), so it would hide the growth
RSS_SCRIPT = """
import sys
from imnet64.label.batch_reader import BatchReader
from imnet64.label.inputs import open_inputs
from imnet64.label.run import _loader, _SideTable

def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))

inputs = open_inputs(sys.argv[1])
budget = int(sys.argv[2]) or None
before = peak()
with BatchReader(len(inputs), _loader(inputs, _SideTable()), 8, threads=8,
                 byte_budget=budget) as reader:
    assert sum(len(b[0]) for b in reader) == len(inputs)
print(peak() - before)
"""


def test_peak_rss_of_the_reader_stays_near_the_budget(tmp_path):
    """The real memory, in a fresh process: 8 threads decoding 8 images of 6.25 Mpx."""
    import subprocess
    import sys

    ramp = np.linspace(0, 255, 2500, dtype=np.float32)
    base = (np.add.outer(ramp, ramp) / 2).astype(np.uint8)
    for k in range(8):
        Image.fromarray(np.dstack([base, np.roll(base, 50 * k, 0), base.T])).save(
            tmp_path / f"{k}.png", compress_level=1)
    item = 2500 * 2500 * DECODE_BYTES_PER_PIXEL + (tmp_path / "0.png").stat().st_size
    budget = 80 * 2**20

    def growth(limit: int) -> int:
        done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path), str(limit)],
                              capture_output=True, text=True, check=True)
        return int(done.stdout.split()[-1])

    bounded, unbounded = growth(budget), growth(0)
    slack = 100 * 2**20  # allocator rounding, PIL internals, thread stacks (seen: <= 30 MiB)
    print(f"RSS growth: {bounded >> 20} MiB with the budget, {unbounded >> 20} MiB without")
    assert bounded <= budget + item + slack, (bounded >> 20, unbounded >> 20)
    assert unbounded > 1.5 * bounded, (bounded >> 20, unbounded >> 20)  # the budget bites
