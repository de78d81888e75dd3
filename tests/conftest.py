"""Shared fixtures. Importing imnet64 first selects Keras 2 before TensorFlow loads."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import imnet64  # noqa: F401

import pytest

REPO = Path(__file__).resolve().parents[1]
# The current stack (`make install STACK=current`, issue 18) has no Horovod.
HOROVOD_MISSING = importlib.util.find_spec("horovod") is None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requires_horovod: needs Horovod (skipped on a stack without it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not HOROVOD_MISSING:
        return
    skip = pytest.mark.skip(reason="Horovod is not installed (the current stack has none)")
    for item in items:
        if item.get_closest_marker("requires_horovod"):
            item.add_marker(skip)
# Built artefacts (the offline teacher) are cached across test runs in the work tree.
os.environ.setdefault("IMNET64_HOME", str(REPO / ".cache" / "imnet64"))


@pytest.fixture(scope="session")
def offline_teacher_dir() -> Path:
    """The real MobileNet V2 teacher (torchvision ImageNet weights) as a TF Hub-style
    SavedModel, built once and cached under IMNET64_HOME."""
    from imnet64.teacher.offline import ensure_offline_teacher

    return ensure_offline_teacher()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """120 real 64x64 photos (crops of package photos) in sub-folders."""
    from imnet64.pipeline.sample_images import write_sample

    root = tmp_path_factory.mktemp("sample")
    write_sample(root, 120, per_folder=50)
    return root


@pytest.fixture(scope="session")
def read_back_dataset(tmp_path_factory) -> Path:
    """A tiny dataset (3 classes x 12 images, one shard per split); never modified."""
    from tiny_dataset import build_tiny_dataset

    return build_tiny_dataset(tmp_path_factory.mktemp("tiny"), per_class=12, shards=1)


@pytest.fixture(scope="session")
def read_back_run(read_back_dataset, tmp_path_factory) -> Path:
    """A run trained on read_back_dataset with read_back_support.TRAIN_ARGS; tests copy it before
    they change anything."""
    from imnet64_cli.main import main
    from read_back_support import TRAIN_ARGS

    run_dir = tmp_path_factory.mktemp("base") / "run"
    assert main([str(a) for a in ["train", read_back_dataset, run_dir, *TRAIN_ARGS]]) == 0
    assert (run_dir / "checkpoints" / "best" / "best.json").is_file()
    return run_dir
