"""Full batches of decoded inputs, read and decoded on threads ahead of the teacher.

Why threads and a bounded queue rather than a Python stage inside tf.data: with the reading
and decoding (file reads + PIL, which release the GIL) inside tf.data as a
`tf.numpy_function` or `Dataset.from_generator`, `imnet64 label` ran on this 2-core machine
at exactly one core's worth (149 images/s at 1.0 cores of CPU) in about a third of the runs,
and at 265-290 images/s (1.8 cores) in the rest, with the same code and inputs; a Python
stage that TensorFlow's own threads must enter (and take the GIL for) is what those runs had
in common. Reading on ordinary Python threads and handing whole uint8 batches to the
teacher's tf.function ran at 1.8 cores in every run measured (bench/label.py shows the
effect end to end). The overlap is the same: while the teacher classifies batch n, the
threads decode batches n+1 and n+2.

Memory: counting items in flight is not enough when one file may be 64 MB or decode to 64
Mpx (x `--read-threads`). Each load reserves the bytes it is about to hold (the file's size
before reading it, the decoded pixels' before decoding) from a `ByteBudget`, and gives
them back when it returns; a load that would go over the budget waits, unless it is the
oldest input not yet loaded, which always may go on (so one input larger than the budget,
or several waiting on each other, never deadlock). Bytes held at once stay within the budget
plus the oldest load's own reservation.
"""

from __future__ import annotations

import ctypes
import functools
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

_DONE = object()

Reserve = Callable[[int], None]


class ByteBudget:
    """Bytes held by the loads running now, at most `limit` (plus the oldest load's).

    Inputs 0, 1, 2, ... are loaded once each, started in that order (a thread pool's FIFO
    queue does that). `begin(i)` / `end(i)` bracket the load of input i; `reserve(i, n)`
    blocks until n more bytes fit, or until i is the oldest input not yet loaded, which
    never waits: every later batch depends on it, and it cannot be waiting for a thread,
    since each input before it has been taken up by one. `peak` is the most ever held.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the byte budget must be at least 1")
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self._held: dict[int, int] = {}
        self._oldest = 0  # the lowest index whose load has not ended
        self._ended: set[int] = set()  # ended loads above _oldest
        self._cond = threading.Condition()

    def begin(self, i: int) -> None:
        with self._cond:
            self._held[i] = 0

    def reserve(self, i: int, nbytes: int) -> None:
        if nbytes <= 0:
            return
        with self._cond:
            while self.in_flight + nbytes > self.limit and i != self._oldest:
                self._cond.wait()
            self._held[i] += nbytes
            self.in_flight += nbytes
            self.peak = max(self.peak, self.in_flight)

    def holding(self, i: int) -> int:
        with self._cond:
            return self._held[i]

    def end(self, i: int) -> None:
        """Give back what load i held."""
        with self._cond:
            self.in_flight -= self._held.pop(i)
            self._ended.add(i)
            while self._oldest in self._ended:
                self._ended.remove(self._oldest)
                self._oldest += 1
            self._cond.notify_all()


def _no_reserve(nbytes: int) -> None:
    return None


# After a load that held more than this, free memory is handed back to the system.
TRIM_AFTER_BYTES = 64 * 2**20


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """glibc keeps memory freed by a thread in that thread's arena (one per reading thread),
    so peak RSS still grew with --read-threads after one big decode at a time in each: 2.8
    GB vs 0.6 GB for 8 threads decoding 49 Mpx PNGs here. malloc_trim returns it to the
    system from every arena. Called after big loads only (64x64 images never get here)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class BatchReader:
    """Iterate (indices int64 [k], images uint8 [k, H, W, 3]) over inputs 0..count-1.

    `load(i, reserve)` reads and decodes input i and returns its uint8 [H, W, 3] image, or
    None when the input is rejected (it records why itself; it must not raise for a bad
    file). It calls `reserve(n)` before it holds n more bytes (the file, the decoded
    pixels); with `byte_budget`, that waits while the bytes held by all loads would exceed
    the budget (see ByteBudget). Only the small images it returns outlive the load. The
    survivors come out in input order, re-batched so that every batch has `batch_size`
    images except the last: the teacher's kernels round differently at other batch sizes,
    so an image's numbers must not depend on where rejects happen to fall.

    Use as a context manager: leaving it (normally or by an exception) stops the reader.
    An exception in the reader is raised again in the consuming thread.
    """

    def __init__(self, count: int, load: Callable[[int, Reserve], np.ndarray | None],
                 batch_size: int, *, threads: int = 4, ahead: int = 2,
                 byte_budget: int | None = None) -> None:
        if batch_size < 1 or threads < 1 or ahead < 1:
            raise ValueError("batch_size, threads and ahead must be at least 1")
        self._count, self._load, self._batch_size = count, load, batch_size
        self._threads = threads
        self.budget = ByteBudget(byte_budget) if byte_budget is not None else None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BatchReader:
        self._thread = threading.Thread(target=self._run, name="imnet64-batch-reader",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()  # a reader blocked on the full queue sees it within 0.1 s (_put)
        if self._thread is not None:
            self._thread.join()
        self._thread = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._thread is None:
            raise RuntimeError("use BatchReader as a context manager")
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item: object) -> bool:
        """Queue `item` unless asked to stop; False when stopping."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _load_one(self, i: int) -> np.ndarray | None:
        budget = self.budget
        if budget is None:
            return self._load(i, _no_reserve)
        budget.begin(i)
        try:
            return self._load(i, lambda nbytes: budget.reserve(i, nbytes))
        finally:
            # the load's big buffers are freed by now; hand them back to the system before
            # the next load may take their place in the budget
            if budget.holding(i) > TRIM_AFTER_BYTES:
                release_free_memory()
            budget.end(i)

    def _run(self) -> None:
        try:
            with ThreadPoolExecutor(self._threads, "imnet64-read") as pool:
                finished = self._put_batches(self._survivors(pool))
            if finished:
                self._put(_DONE)
        except BaseException as e:  # noqa: BLE001  (handed to the consumer, not lost)
            self._put(e)

    def _survivors(self, pool: ThreadPoolExecutor) -> Iterator[tuple[int, np.ndarray]]:
        """(index, image) of every input not rejected, in input order, loaded one batch's
        worth at a time; ends early (between batches' worth) when asked to stop."""
        for start in range(0, self._count, self._batch_size):
            chunk = range(start, min(start + self._batch_size, self._count))
            for i, image in zip(chunk, pool.map(self._load_one, chunk)):
                if image is not None:
                    yield i, image
            if self._stop.is_set():
                return

    def _put_batches(self, survivors: Iterator[tuple[int, np.ndarray]]) -> bool:
        """Queue the survivors in batches of batch_size (the last may be smaller); False
        when asked to stop."""
        indices: list[int] = []
        images: list[np.ndarray] = []
        for i, image in survivors:
            indices.append(i)
            images.append(image)
            if len(indices) == self._batch_size:
                if not self._put(self._batch(indices, images)):
                    return False
                indices, images = [], []
        if self._stop.is_set():
            return False
        return not indices or self._put(self._batch(indices, images))

    @staticmethod
    def _batch(indices: list[int], images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(indices, np.int64), np.stack(images)
