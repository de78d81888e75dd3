"""What `import imnet64` does before TensorFlow loads: Keras 2, and no start-up noise."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from imnet64.quiet_tf_import import BENIGN, filtered_fd2

# the import, then the first op: TensorFlow initialises its CUDA platform at first device use
IMPORT_TF = ("import imnet64, tensorflow as tf, tf_keras; print(tf.keras.__name__); "
             "print(float(tf.constant(1.0) + 1))")
TF_VERSION = tuple(int(p) for p in metadata.version("tensorflow").split(".")[:2])
NO_GPU = not any(Path("/dev").glob("nvidia[0-9]*"))


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TF_USE_LEGACY_KERAS", "IMNET64_TF_STARTUP_LOGS")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, **env}, timeout=300, check=True)


def test_import_selects_keras_2_and_drops_only_the_plugin_lines():
    quiet = _run(IMPORT_TF)
    # Keras 2, what Horovod needs
    assert quiet.stdout.split() == ["tf_keras.api._v2.keras", "2.0"]
    assert "Unable to register" not in quiet.stderr
    assert "absl::InitializeLog" not in quiet.stderr
    # the filter is what removed them: with it off, this TensorFlow wheel prints them (the
    # plugin lines up to TF 2.18, absl's preamble on every stack)
    loud = _run(IMPORT_TF, IMNET64_TF_STARTUP_LOGS="1")
    assert any(BENIGN.search(line) for line in loud.stderr.splitlines()), loud.stderr
    assert not any(BENIGN.search(line) for line in quiet.stderr.splitlines()), quiet.stderr
    if TF_VERSION < (2, 21):  # the stack Horovod pins: the plugins register twice
        assert "Unable to register cuDNN factory" in loud.stderr
    # INFO lines TF >= 2.19 prints before TF_CPP_MIN_LOG_LEVEL applies (TF 2.18 hides them)
    assert "oneDNN custom operations are on" not in quiet.stderr, quiet.stderr
    if NO_GPU:  # no NVIDIA device here: CUDA's failed start-up is noise, not a diagnosis
        assert "failed call to cuInit" in loud.stderr
        assert "cuInit" not in quiet.stderr, quiet.stderr
        assert "Could not find cuda drivers" not in quiet.stderr, quiet.stderr


ONEDNN = ("import os, imnet64, tensorflow as tf; "
          "from tensorflow.python.util import _pywrap_util_port as p; "
          "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], p.IsMklEnabled())")


def test_import_turns_onednn_on_unless_the_user_set_it():
    """oneDNN's CPU kernels are on whatever TensorFlow's default on this CPU (off on AVX2-only
    CPUs: 2.5x slower labeling), and an explicit setting still wins, in a child too."""
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}

    def run(env: dict[str, str]) -> str:
        return subprocess.run([sys.executable, "-c", ONEDNN], capture_output=True, text=True,
                              env={**clean, **env}, timeout=300, check=True).stdout.strip()

    assert run({}) == "1 True"
    assert run({"TF_ENABLE_ONEDNN_OPTS": "0"}) == "0 False"


def test_filtered_fd2_keeps_every_other_line(capfd):
    with filtered_fd2():
        os.write(2, b"E0000 cuda_blas.cc:1418] Unable to register cuBLAS factory: Attempting to "
                    b"register factory for plugin cuBLAS when one has already been registered\n")
        os.write(2, b"a real error from C++\n")
        print("python stderr too", file=sys.stderr)
    err = capfd.readouterr().err
    assert "a real error from C++\n" in err and "python stderr too\n" in err
    assert "cuBLAS" not in err


def test_filtered_fd2_restores_stderr_after_an_exception(capfd):
    try:
        with filtered_fd2():
            os.write(2, b"said before failing\n")
            raise RuntimeError("import failed")
    except RuntimeError:
        pass
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "said before failing\nafter\n"
