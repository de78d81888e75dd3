"""Every output imnet64 writes records what produced it (imnet64.formats.provenance, filled
in by imnet64.cluster.provenance): one small real demo run (real photos, the real offline
teacher, label, shard-records, training, evaluate, export, summary) in this process, then each
output kind is read the way its readers do."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import imnet64
from imnet64 import atomic
from imnet64.cluster import provenance as collecting
from imnet64.cluster.environment import IMAGE_ID_VAR, Environment
from imnet64.formats import provenance
from imnet64.teacher.fingerprint import teacher_sha256
from imnet64.teacher.offline import WEIGHTS_SHA256

import pytest

IMAGE_ID = "imnet64-test-image:42"


@pytest.fixture(scope="module")
def demo_work(tmp_path_factory, offline_teacher_dir) -> Path:
    from imnet64.pipeline.demo import DemoConfig, run_demo

    work = tmp_path_factory.mktemp("provenance")
    cfg = DemoConfig(workdir=str(work), images=48, shards=2, classes=2, val_fraction=0.25,
                     epochs=2, warmup_epochs=1.0, batch_size=8, ranks=1, widths=(8, 8, 8),
                     repeats=(1, 1, 1))
    previous = os.environ.get(IMAGE_ID_VAR)
    os.environ[IMAGE_ID_VAR] = IMAGE_ID  # as our Dockerfile sets it
    try:
        run_demo(cfg)
    finally:
        if previous is None:
            os.environ.pop(IMAGE_ID_VAR, None)
        else:
            os.environ[IMAGE_ID_VAR] = previous
    return work


def _label_part(work: Path) -> dict:
    from imnet64.formats.label_parts import part_paths, read_summary

    summary = part_paths(work / "labeling", 1, 2).summary
    # the part file itself: code and teacher only (it must stay byte-identical on a re-run)
    assert sorted(atomic.read_json(summary)[provenance.KEY]) == sorted(provenance.STABLE_FIELDS)
    return read_summary(summary)[provenance.KEY]


def _dataset(work: Path) -> dict:
    from imnet64.formats.manifest import MANIFEST_NAME, dataset_provenance

    raw = atomic.read_json(work / "dataset" / MANIFEST_NAME)
    # the same bytes for any number of ranks or workers: no host, no job ids
    assert sorted(raw[provenance.KEY]) == sorted(provenance.STABLE_FIELDS)
    return dataset_provenance(work / "dataset")


def _export(work: Path) -> dict:
    from imnet64.train.export import read_metadata

    return read_metadata(work / "export" / "model")[provenance.KEY]


def _evaluation(work: Path) -> dict:
    evaluation = atomic.read_json(work / "run" / "evaluation-val.json")
    assert evaluation["run_provenance"] == atomic.read_json(
        work / "run" / "config.json")[provenance.KEY]
    return evaluation[provenance.KEY]


KINDS = {
    "label part": _label_part,
    "dataset.json": _dataset,
    "run config.json": lambda work: atomic.read_json(work / "run" / "config.json")[provenance.KEY],
    "run history.json": lambda work: atomic.read_json(work / "run" / "history.json")[
        provenance.KEY],
    "evaluation": _evaluation,
    "exported model": _export,
    "demo summary.json": lambda work: atomic.read_json(work / "summary.json")[provenance.KEY],
}


def _installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_output_kind_records_its_provenance(demo_work, kind):
    fields = KINDS[kind](demo_work)
    assert sorted(fields) == sorted(provenance.FIELDS)  # every field, none missing or extra
    assert fields["imnet64_version"] == imnet64.__version__
    assert fields["python"] == platform.python_version()
    assert fields["tensorflow"] == metadata.version("tensorflow")
    assert fields["horovod"] == _installed_version("horovod")  # None on a stack without it
    assert fields["git_commit"] == collecting.git_commit()
    assert fields["container_image"] == IMAGE_ID
    # the labels' teacher travels with every later output: dataset, run, model, summary
    assert Path(fields["teacher"]).name == "mobilenet_v2_torchvision"
    assert fields["teacher_sha256"] == WEIGHTS_SHA256
    assert fields["host"] == platform.node()
    assert fields["slurm_job_id"] == (os.environ.get("SLURM_JOB_ID") or None)


def test_a_saved_model_teacher_is_hashed_over_its_files_and_cached(tmp_path, monkeypatch,
                                                                     offline_teacher_dir):
    import shutil

    from imnet64.teacher.offline import METADATA_FILE

    monkeypatch.setenv("IMNET64_HOME", str(tmp_path / "home"))
    model = tmp_path / "model"
    shutil.copytree(offline_teacher_dir, model)
    (model / METADATA_FILE).unlink()  # not the offline teacher: any SavedModel folder
    first = teacher_sha256(model)
    assert first and first != WEIGHTS_SHA256
    assert len(list((tmp_path / "home" / "cache" / "teacher-sha256").iterdir())) == 1
    assert teacher_sha256(model) == first  # from the cache
    variables = next((model / "variables").glob("*.data-*"))
    data = bytearray(variables.read_bytes())
    data[-1] ^= 1
    variables.write_bytes(bytes(data))  # other weights: another sha256 (not the cached one)
    assert teacher_sha256(model) not in (None, first)
    assert teacher_sha256(tmp_path / "nothing-here") is None


def test_collect_gives_every_field_in_the_schema_order():
    environment = Environment.read({"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10",
                                    "SLURM_ARRAY_TASK_ID": "2", IMAGE_ID_VAR: "img:1"})
    fields = collecting.collect("offline", "ab" * 32, environment)
    assert tuple(fields) == provenance.FIELDS
    assert (fields["slurm_job_id"], fields["slurm_array_job_id"],
            fields["slurm_array_task_id"], fields["slurm_step_id"]) == ("12", "10", "2", None)
    assert fields["container_image"] == "img:1"
    assert provenance.lines(fields)[-1].endswith("Slurm job 10_2")


def test_git_commit_is_read_without_git(tmp_path):
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    assert collecting.git_commit(tmp_path) is None  # a branch without a commit yet
    (git / "packed-refs").write_text(f"# pack-refs\n{'a' * 40} refs/heads/main\n")
    assert collecting.git_commit(tmp_path) == "a" * 40
    (git / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert collecting.git_commit(tmp_path) == "b" * 40  # a loose ref wins
    (git / "HEAD").write_text("c" * 40 + "\n")  # detached
    assert collecting.git_commit(tmp_path) == "c" * 40
    assert collecting.git_commit(tmp_path / "elsewhere") is None


@pytest.mark.slow
def test_inspect_and_evaluate_print_the_provenance(demo_work, capsys):
    from imnet64_cli.main import main

    assert main(["inspect", str(demo_work / "dataset")]) == 0
    out = capsys.readouterr().out
    made_by = next(line for line in out.splitlines() if line.startswith("made by"))
    assert f"imnet64 {imnet64.__version__}" in made_by and f"image {IMAGE_ID}" in made_by
    assert f"teacher {offline_name(demo_work)} (sha256 {WEIGHTS_SHA256[:16]}…)" in out
    assert f"host {platform.node()}" in out  # from dataset.run.json
    assert main(["evaluate", str(demo_work / "run"), "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith(f"trained by  imnet64 {imnet64.__version__}")
    assert f"(sha256 {WEIGHTS_SHA256[:16]}…)" in out


def offline_name(work: Path) -> str:
    return atomic.read_json(work / "dataset" / "dataset.json")[provenance.KEY]["teacher"]


@pytest.mark.slow
def test_label_parts_of_other_teacher_weights_are_not_mixed(demo_work, tmp_path):
    import shutil

    from imnet64.errors import UserError
    from imnet64.records.source import scan_source

    labels = shutil.copytree(demo_work / "labeling", tmp_path / "labeling")
    part = labels / "labels" / "part-00001-of-00002.json"
    summary = atomic.read_json(part)
    summary[provenance.KEY]["teacher_sha256"] = "0" * 64  # e.g. the TF Hub module changed
    atomic.write_json(part, summary)
    with pytest.raises(UserError, match="come from teachers with different weights"):
        scan_source(labels)
