"""Drop the benign start-up lines TensorFlow's CUDA wheels print on every import.

The `tensorflow` wheel registers its cuFFT/cuDNN/cuBLAS plugins twice and says so on stderr
("Unable to register cuDNN factory ...", plus absl's "All log messages before
absl::InitializeLog()" preamble) at ERROR level, so TF_CPP_MIN_LOG_LEVEL cannot hide them
without hiding real errors too. They come from C++ writing to file descriptor 2, so
`sys.stderr` cannot catch them either: while TensorFlow's top-level module executes, fd 2
goes to a temporary file; afterwards every line but those known ones is written back.
Set IMNET64_TF_STARTUP_LOGS=1 to keep everything.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator

BENIGN = re.compile(
    r"Unable to register cu(?:FFT|DNN|BLAS) factory: Attempting to register factory for "
    r"plugin cu\w+ when one has already been registered"
    r"|^WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR$"
)


@contextlib.contextmanager
def filtered_fd2(drop: re.Pattern[str] = BENIGN) -> Iterator[None]:
    """Send fd 2 to a temporary file for the block, then replay its lines except `drop`'s."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(True)
                    if not drop.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` like the path finder does, but runs its module body inside
    `filtered_fd2`. Removes itself on first use: only the first import prints those lines."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader_exec = spec.loader.exec_module

        def exec_module(module) -> None:
            with filtered_fd2():
                loader_exec(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Filter TensorFlow's first import, unless it already happened or the user opted out."""
    if "tensorflow" in sys.modules or os.environ.get("IMNET64_TF_STARTUP_LOGS") == "1":
        return
    if not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
