"""Drop the benign start-up lines TensorFlow's CUDA wheels print in every process.

The `tensorflow` wheel registers its cuFFT/cuDNN/cuBLAS plugins twice and says so on stderr
("Unable to register cuDNN factory ...", plus absl's "All log messages before
absl::InitializeLog()" preamble) at ERROR level, so TF_CPP_MIN_LOG_LEVEL cannot hide them
without hiding real errors too. They come from C++ writing to file descriptor 2, so
`sys.stderr` cannot catch them either: while TensorFlow's top-level module executes, fd 2
goes to a temporary file; afterwards every line but those known ones is written back.

TensorFlow >= 2.19 logs through absl before TF_CPP_MIN_LOG_LEVEL applies, so two INFO
lines that TF 2.18 hides at imnet64's level 2 come through there: "oneDNN custom operations
are on ..." is dropped too (whether oneDNN ran is in imnet64.cluster.machine's line), and
"Could not find cuda drivers on your machine ..." is treated like cuInit's line below.

A machine without an NVIDIA device adds one more at the first device use, not at import:
"failed call to cuInit: ... UNKNOWN ERROR (303)". There, still inside the filter, the import
lists the physical devices (which starts the CUDA platform and prints it) and drops it too,
with the "no cuda drivers" line. With an NVIDIA device present those lines are a real
diagnosis and stay, and CUDA is left to start when TensorFlow first needs it (a CUDA context
made before a fork is unusable in the child). Set IMNET64_TF_STARTUP_LOGS=1 to keep
everything.
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
from pathlib import Path

BENIGN = re.compile(
    r"Unable to register cu(?:FFT|DNN|BLAS) factory: Attempting to register factory for "
    r"plugin cu\w+ when one has already been registered"
    r"|^WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR$"
    r"|\] oneDNN custom operations are on\. "
)
# Only dropped where no NVIDIA device exists (see the module's docstring).
CUINIT_WITHOUT_GPU = re.compile(
    r"failed call to cuInit|Could not find cuda drivers on your machine, GPU will not be used")


def nvidia_device_present(dev: Path = Path("/dev")) -> bool:
    """An NVIDIA GPU device node (/dev/nvidia0, ...), as the driver creates one per GPU."""
    return any(dev.glob("nvidia[0-9]*"))


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
        start_cuda_now = not nvidia_device_present()
        drop = (re.compile(f"{BENIGN.pattern}|{CUINIT_WITHOUT_GPU.pattern}") if start_cuda_now
                else BENIGN)

        def exec_module(module) -> None:
            with filtered_fd2(drop):
                loader_exec(module)
                if start_cuda_now:
                    _list_devices(module)

        spec.loader.exec_module = exec_module
        return spec


def _list_devices(tf) -> None:
    """Start TensorFlow's device platforms now (CUDA says it found nothing). Listing
    physical devices leaves every setting that must precede the runtime's start open
    (threads, visible devices, memory growth)."""
    with contextlib.suppress(Exception):  # it only ever tidies the logs
        tf.config.list_physical_devices()


def install(keep_logs: bool = False) -> None:
    """Filter TensorFlow's first import, unless it already happened or the user opted out
    (`keep_logs`: IMNET64_TF_STARTUP_LOGS=1, read by imnet64.cluster.startup)."""
    if "tensorflow" in sys.modules or keep_logs:
        return
    if not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
