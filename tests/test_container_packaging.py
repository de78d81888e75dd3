"""The package as the image installs it (`pip install .`, not the editable install of the
work tree): every module of imnet64/ and cli/ must be in the wheel. A sub-package missing
from pyproject's explicit package list only shows outside the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_module_and_the_class_names(tmp_path: Path) -> None:
    # Build from a copy, as the image does: a stale build/ folder in the work tree could
    # otherwise slip old copies of modules into the wheel.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("imnet64", "cli"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(src)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("imnet64-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"imnet64/{p.relative_to(REPO / 'imnet64').as_posix()}"
                for p in (REPO / "imnet64").rglob("*.py")}
    expected |= {f"imnet64_cli/{p.relative_to(REPO / 'cli').as_posix()}"
                 for p in (REPO / "cli").rglob("*.py")}
    assert expected - names == set()
    assert "imnet64/data/imagenet_class_names.txt" in names
    assert not any(n.startswith("cli/") for n in names)  # never a bare top-level "cli"
