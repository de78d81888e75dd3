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
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

_DONE = object()


class BatchReader:
    """Iterate (indices int64 [k], images uint8 [k, H, W, 3]) over inputs 0..count-1.

    `load(i)` reads and decodes input i and returns its uint8 [H, W, 3] image, or None when
    the input is rejected (it records why itself; it must not raise for a bad file). The
    survivors come out in input order, re-batched so that every batch has `batch_size`
    images except the last: the teacher's kernels round differently at other batch sizes,
    so an image's numbers must not depend on where rejects happen to fall.

    Use as a context manager: leaving it (normally or by an exception) stops the reader.
    An exception in the reader is raised again in the consuming thread.
    """

    def __init__(self, count: int, load: Callable[[int], np.ndarray | None],
                 batch_size: int, *, threads: int = 4, ahead: int = 2) -> None:
        if batch_size < 1 or threads < 1 or ahead < 1:
            raise ValueError("batch_size, threads and ahead must be at least 1")
        self._count, self._load, self._batch_size = count, load, batch_size
        self._threads = threads
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

    def _run(self) -> None:
        try:
            with ThreadPoolExecutor(self._threads, "imnet64-read") as pool:
                indices: list[int] = []
                images: list[np.ndarray] = []
                for start in range(0, self._count, self._batch_size):
                    chunk = range(start, min(start + self._batch_size, self._count))
                    for i, image in zip(chunk, pool.map(self._load, chunk)):
                        if image is None:
                            continue
                        indices.append(i)
                        images.append(image)
                        if len(indices) == self._batch_size:
                            if not self._put(self._batch(indices, images)):
                                return
                            indices, images = [], []
                    if self._stop.is_set():
                        return
                if indices and not self._put(self._batch(indices, images)):
                    return
            self._put(_DONE)
        except BaseException as e:  # noqa: BLE001  (handed to the consumer, not lost)
            self._put(e)

    @staticmethod
    def _batch(indices: list[int], images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(indices, np.int64), np.stack(images)
