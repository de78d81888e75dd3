"""The machine line that goes with every figure: CPU model and vector extensions, cores,
memory, whether TensorFlow's oneDNN is on, TensorFlow's version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from imnet64.cluster import machine

# /proc/cpuinfo of the AVX2-only machine of issue 13 (AMD Zen 3), trimmed to what we read.
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes
"""


def test_zen3_line_names_model_extensions_and_onednn_off_by_default():
    m = machine.describe(ZEN3, env={})
    assert m.cpu == "AMD EPYC 7B13 (family 25 model 1)"
    assert m.extensions == ("avx2", "fma")
    assert m.onednn is False  # TF 2.18 leaves oneDNN off without AVX-512 VNNI/BF16 or AMX
    line = m.line()
    assert line.startswith("AMD EPYC 7B13 (family 25 model 1), ")
    assert "avx2 fma, oneDNN off (TensorFlow's default on this CPU)" in line
    assert f"TensorFlow {m.tensorflow}" in line and m.tensorflow.startswith("2.")


def test_explicit_setting_wins_as_tensorflow_reads_it():
    on = machine.describe(ZEN3, env={"TF_ENABLE_ONEDNN_OPTS": "True"})
    assert on.onednn is True
    assert "oneDNN on (TF_ENABLE_ONEDNN_OPTS=True; TensorFlow's default on this CPU: off)" \
        in on.line()
    assert machine.describe(ZEN3, env={"TF_ENABLE_ONEDNN_OPTS": "0"}).onednn is False
    # a value TensorFlow does not accept means its default
    assert machine.describe(ZEN3, env={"TF_ENABLE_ONEDNN_OPTS": "yes"}).onednn is False
    avx512 = ZEN3.replace("avx2", "avx2 avx512f avx512_vnni")
    assert machine.describe(avx512, env={}).onednn is True


def test_this_machine_line_agrees_with_proc_cpuinfo_and_tensorflow():
    """The default predicted from /proc/cpuinfo == what TensorFlow itself decides in a
    process that never sets the variable (without imnet64, which sets it). An explicit
    setting as TensorFlow reads it: tests/test_package_import.py."""
    info = Path("/proc/cpuinfo").read_text()
    m = machine.describe()
    assert m.cpu.startswith(machine._field(info, "model name"))
    assert m.cores >= 1 and m.memory_gib > 0
    # TensorFlow (loaded here) did what the variable says: imnet64 sets 1 unless it was set
    assert m.onednn is machine.parse_bool_env(os.environ["TF_ENABLE_ONEDNN_OPTS"])
    ask = ("from tensorflow.python.util import _pywrap_util_port as p; "
           "print(p.IsMklEnabled())")
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", ask], env=clean, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == str(machine.describe(info, env={}).onednn)
