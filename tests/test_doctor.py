"""`imnet64 doctor` without a cluster: planted layouts in real environment variables (the
command in a subprocess), the teacher and disk checks, and the disk estimate against real
records of real photos. tests/test_slurm_operator.py runs it inside real Slurm jobs."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from imnet64.pipeline import doctor
from imnet64.teacher.offline import WEIGHTS_SHA256

import pytest

REPO = Path(__file__).resolve().parents[1]
IMNET64 = Path(sys.executable).with_name("imnet64")  # this venv's, whichever stack
LAUNCHER_VARS = ("SLURM", "OMPI_", "PMI", "HOROVOD_", "CUDA_VISIBLE_DEVICES",
                 "GPU_DEVICE_ORDINAL")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any launcher's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARS)}
    return {**env, **extra}


def run_doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(IMNET64), "doctor", *args], capture_output=True, text=True,
                          env=env, timeout=300)


# A 2-task srun step on node1/node2 as Slurm sets it, but: rank 3 of 2, no PMI (plain srun
# with MpiDefault=none), and two ranks on this node sharing the one GPU Slurm bound.
WRONG_LAYOUT = {
    "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "2",
    "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_NODEID": "0",
    "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "node[1-2]", "SLURMD_NODENAME": "node1",
    "SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0",
}


@pytest.mark.requires_horovod  # no PMI is a problem for Horovod only
def test_a_planted_wrong_layout_exits_1_naming_each_problem(tmp_path):
    done = run_doctor("--quick", "--no-teacher", "--json", env=clean_env(**WRONG_LAYOUT))
    assert done.returncode == 1, done.stderr
    problems = done.stderr.splitlines()
    assert all(line.startswith("problem: ") for line in problems), problems
    text = "\n".join(problems)
    assert "SLURM_PROCID=3 is not a rank of SLURM_STEP_NUM_TASKS=2" in text
    assert "srun started 2 tasks without PMI (SLURM_MPI_TYPE=none)" in text
    assert "2 ranks per node but 1 GPU(s) visible to each (CUDA_VISIBLE_DEVICES=0)" in text
    assert len(problems) == 3, problems
    report = json.loads(done.stdout)  # the report stays machine-readable
    assert report["ok"] is False and report["problems"] == [p[9:] for p in problems]
    launcher = report["launcher"]
    assert (launcher["kind"], launcher["size"], launcher["local_size"]) == ("slurm", 2, 2)
    assert launcher["nodes"] == ["node1", "node2"] and launcher["node"] == "node1"
    assert report["gpus"]["granted"] == 1 and report["gpus"]["visible"] == 1
    assert report["provenance"]["slurm_job_id"] == "77"


def test_the_same_step_bound_right_is_fine():
    """One GPU per task (--gpus-per-task 1) and PMIx: nothing to report."""
    env = {**WRONG_LAYOUT, "SLURM_PROCID": "1", "PMIX_RANK": "1", "SLURM_MPI_TYPE": "pmix",
           "SLURM_GPUS_PER_TASK": "1", "SLURM_GPUS_ON_NODE": "2", "CUDA_VISIBLE_DEVICES": "1"}
    report = doctor.diagnose(env=env, quick=True, check_teacher_=False)
    assert report.problems == []
    assert report.launcher.pmi == "pmix" and report.gpus.per_task


def test_np_auto_without_gpus_when_gpus_were_asked_for():
    report = doctor.diagnose(env={"CUDA_VISIBLE_DEVICES": ""}, np_text="auto", gpus="all",
                             quick=True, check_teacher_=False)
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith("--np auto would start 1 rank on the CPU: no GPU is "
                                         "visible here (CUDA_VISIBLE_DEVICES=)")
    assert "--gpus all" in report.problems[0]
    # without asking for GPUs (or with --gpus 0), one CPU rank is what --np auto means
    for gpus in (None, "0"):
        assert doctor.diagnose(env={"CUDA_VISIBLE_DEVICES": ""}, np_text="auto", gpus=gpus,
                               quick=True, check_teacher_=False).problems == []
    expected = doctor.diagnose(env={"CUDA_VISIBLE_DEVICES": "0"}, gpus="2", quick=True,
                               check_teacher_=False).problems
    assert expected == ["--gpus 2 expected, but 1 GPU(s) are visible here "
                        "(CUDA_VISIBLE_DEVICES=0)"]
    # mpirun's variables, the world mpirun says: size 4, 2 on this node
    mpi = doctor.diagnose(env={"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
                               "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                               "OMPI_COMM_WORLD_LOCAL_SIZE": "2"},
                          quick=True, check_teacher_=False)
    assert (mpi.launcher.kind, mpi.launcher.rank, mpi.launcher.size) == ("mpi", 3, 4)
    assert mpi.launcher.pmi == "ompi" and mpi.problems == []


def test_hostlists_and_tasks_per_node():
    assert doctor.expand_hostlist("node[1-2]") == ["node1", "node2"]
    assert doctor.expand_hostlist("gpu[08-10,12],login") == ["gpu08", "gpu09", "gpu10",
                                                             "gpu12", "login"]
    assert doctor.expand_hostlist("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert doctor.tasks_per_node("2(x3),1") == [2, 2, 2, 1]


def test_teacher_missing_on_an_offline_node_and_found_in_the_cache(tmp_path,
                                                                   offline_teacher_dir):
    handle = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/classification/5"
    env = {"TFHUB_CACHE_DIR": str(tmp_path / "hub")}
    check, problems = doctor.check_teacher(handle, env, network=False)
    assert not check.present and len(problems) == 1
    assert problems[0].startswith(f"teacher {handle} is not in the TF Hub cache "
                                  f"{tmp_path}/hub and tfhub.dev cannot be reached from here")
    # filled on a login node (imnet64 teacher fetch): found, and its weights hashed
    cached = tmp_path / "hub" / hashlib.sha1(handle.encode()).hexdigest()
    shutil.copytree(offline_teacher_dir, cached)
    check, problems = doctor.check_teacher(handle, env, network=False)
    assert check.present and problems == [] and check.sha256 == WEIGHTS_SHA256
    check, problems = doctor.check_teacher(str(tmp_path / "no-model"), env)
    assert not check.present and "is not a SavedModel folder" in problems[0]
    check, problems = doctor.check_teacher("offline", {"IMNET64_HOME": str(
        offline_teacher_dir.parents[1])})
    assert check.present and check.sha256 == WEIGHTS_SHA256 and problems == []


def test_tfhub_cache_dir_is_the_one_tf_hub_uses(tmp_path, monkeypatch):
    from imnet64.teacher import hub

    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    assert doctor.tfhub_cache_dir(os.environ) == hub.cache_dir()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    assert doctor.tfhub_cache_dir(os.environ) == hub.cache_dir() == tmp_path


def test_not_enough_disk_for_the_planned_images(tmp_path):
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    images = free // doctor.estimate_bytes_per_image("label") + 1000
    check, problems = doctor.check_disk(tmp_path / "out", images, "label")
    assert check.measured_at == str(tmp_path) and check.needed_bytes > free
    assert len(problems) == 1 and problems[0].startswith(f"{tmp_path}/out: {images} images "
                                                         "need about ")
    check, problems = doctor.check_disk(tmp_path / "out", 1000, "all")
    assert problems == [] and check.needed_bytes == 1000 * check.bytes_per_image


def test_the_disk_estimate_matches_real_records_of_real_photos():
    """Bytes per image as imnet64 writes them: a label record + CSV row, a dataset record
    (png), each with TFRecord framing, for real 64x64 photos; vs the estimate at the
    photos' mean PNG size."""
    from imnet64.formats.tfrecord_schema import (
        DatasetExample,
        LabeledImage,
        serialize_dataset_example,
        serialize_labeled,
    )
    from imnet64.pipeline.sample_images import iter_sample

    pngs, label_bytes, dataset_bytes = [], 0, 0
    for i, (_, image) in enumerate(iter_sample(60)):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        png = buffer.getvalue()
        pngs.append(len(png))
        name = f"train/n01440764/n01440764_{10000 + i}.png"
        probs = (0.9, 0.05, 0.02, 0.02, 0.01)
        label_bytes += 16 + len(serialize_labeled(LabeledImage(
            png, "png", 64, 64, name, 1, "tench", 0.9, (1, 2, 3, 4, 5), probs)))
        label_bytes += len(f"{name},1,tench,0.900000\n")
        dataset_bytes += 16 + len(serialize_dataset_example(DatasetExample(
            png, "png", name, 0, "tench", 1, 0.9, (1, 2, 3, 4, 5), probs, (0, -1, -1, -1, -1))))
    mean_png = round(sum(pngs) / len(pngs))
    # Every field but the PNG has the same width in each record above, so the estimate (mean
    # PNG + a constant overhead) can be off per image only by rounding the mean (0.5 byte) and
    # by what its constants do not model: the CSV row's 60 bytes are the mean over ImageNet's
    # classes (checked below), 'tench''s row is shorter; and the constants count the PNG's
    # length prefix as ~3 bytes (1 tag + a 2-byte varint, exact for 128 B - 16 KiB PNGs), 1.
    csv_row = len(f"{name},1,tench,0.900000\n")
    allowed = {"label": 0.5 + abs(doctor.LABEL_CSV_ROW - csv_row) + 1, "dataset": 0.5 + 1}
    for stage, real in (("label", label_bytes), ("dataset", dataset_bytes)):
        estimate = doctor.estimate_bytes_per_image(stage, mean_png) * len(pngs)
        assert abs(estimate - real) / len(pngs) <= allowed[stage], (stage, estimate, real)
    # the CSV row of a 35-character name, averaged over ImageNet's 1000 classes (ids 1..1000)
    from imnet64.formats.class_names import imagenet_class_names

    rows = [len(f"{name},{i},{text},0.900000\n")
            for i, text in enumerate(imagenet_class_names()) if i > 0]
    assert abs(sum(rows) / len(rows) - doctor.LABEL_CSV_ROW) <= 1, sum(rows) / len(rows)


@pytest.mark.requires_horovod
def test_doctor_on_this_machine_is_ok_and_says_what_it_saw(offline_teacher_dir, tmp_path):
    """The whole command (TensorFlow and Horovod imported) outside any launcher."""
    env = clean_env(IMNET64_HOME=str(offline_teacher_dir.parents[1]))
    done = run_doctor("--json", "--teacher", "offline", "--out", str(tmp_path), "--images",
                      "1000", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["problems"] == [] and done.stderr == ""
    assert report["launcher"]["kind"] == "none" and report["launcher"]["size"] == 1
    assert report["horovod"]["imported"] and report["horovod"]["mpi"] is True
    assert report["horovod"]["controller"] == "mpi"
    assert report["tensorflow"]["imported"] and report["gpus"]["tensorflow"] == 0
    assert report["teacher"]["present"] and report["teacher"]["sha256"] == WEIGHTS_SHA256
    assert report["disk"]["needed_bytes"] == 1000 * report["disk"]["bytes_per_image"]
    assert report["provenance"]["teacher_sha256"] == WEIGHTS_SHA256
    assert report["engines"] == ["horovod", "tf"]
    text = run_doctor("--teacher", "offline", "--quick", env=env)
    assert text.returncode == 0 and "ok: nothing found" in text.stdout, text.stderr


def test_doctor_says_which_engines_this_stack_has():
    horovod = importlib.util.find_spec("horovod") is not None
    done = run_doctor("--no-teacher", env=clean_env())
    assert done.returncode == 0, done.stderr
    engines = "horovod, tf" if horovod else "tf"
    assert f"training engines on this stack: {engines} (imnet64 train --engine)" in done.stdout


def test_without_horovod_a_step_without_pmi_is_fine_for_the_tf_engine():
    """No Horovod (the current stack): PMI is nobody's business, and several ranks are a
    job for --engine tf, not a refusal."""
    no_horovod = doctor.HorovodBuild(None, False)
    launcher = doctor.read_launcher(WRONG_LAYOUT)
    problems, _ = doctor.launcher_problems(launcher, WRONG_LAYOUT, no_horovod)
    assert not any("PMI" in p for p in problems), problems
    tf_only = doctor.TensorFlowInfo("2.21.0", True)
    assert doctor.installed_engines(no_horovod, tf_only) == ["tf"]
    assert doctor.installed_engines(doctor.HorovodBuild("0.28.1", True), tf_only) == [
        "horovod", "tf"]
    broken = doctor.HorovodBuild("0.28.1", False, error="ImportError: undefined symbol")
    assert doctor.installed_engines(broken, tf_only) == ["tf"]


def test_bad_options_are_one_line_errors():
    env = clean_env()
    for args, message in ((["--images", "5"], "--images needs --out"),
                          (["--np", "two"], "--np must be"),
                          (["--gpus", "some", "--quick", "--no-teacher"], "--gpus must be")):
        done = run_doctor(*args, env=env)
        assert done.returncode == 2 and done.stderr.startswith("error: "), (args, done.stderr)
        assert message in done.stderr and done.stderr.count("\n") == 1


# -- issue 24: what used to pass as "ok" ----------------------------------------------------------


def _problems(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("problem: ") for line in lines), lines
    assert "ok: nothing found" not in done.stdout
    return "\n".join(lines)


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only mount (what a read-only --out is on a cluster); root ignores chmod."""
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_out_is_a_problem(read_only_folder):
    for out in (read_only_folder, read_only_folder / "run" / "deeper"):
        text = _problems(run_doctor("--quick", "--no-teacher", "--out", str(out),
                                    env=clean_env()))
        assert f"{out}: cannot write here" in text and "read-only" in text, text


def _saved_model(folder: Path, outputs: int) -> Path:
    code = f"""
import imnet64, tensorflow as tf
class M(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.ones([3, {outputs}]))
    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
    def __call__(self, x):
        return tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.w)
m = M()
tf.saved_model.save(m, {str(folder)!r}, signatures=m.__call__)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return folder


def test_a_teacher_with_10_outputs_is_a_problem(tmp_path):
    teacher = _saved_model(tmp_path / "ten", 10)
    text = _problems(run_doctor("--teacher", str(teacher), env=clean_env()))
    assert f"teacher {teacher}" in text and "[1, 10]" in text and "1001" in text, text


def test_a_teacher_with_bit_flipped_variables_is_a_problem(offline_teacher_dir, tmp_path):
    teacher = tmp_path / "flipped"
    shutil.copytree(offline_teacher_dir, teacher)
    data = teacher / "variables" / "variables.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    text = _problems(run_doctor("--teacher", str(teacher), env=clean_env()))
    assert f"teacher {teacher}" in text and "DataLossError" in text, text


def test_a_tf_config_naming_workers_that_will_not_come_is_a_problem():
    """Two workers, this one index 0, the other never started: `train --engine tf` would wait
    for it. Checked cheaply (no wait for peers): the peer's port does not answer."""
    from imnet64.cluster.launch import free_local_ports

    mine, other = free_local_ports(2)
    config = {"cluster": {"worker": [f"localhost:{mine}", f"localhost:{other}"]},
              "task": {"type": "worker", "index": 0}}
    text = _problems(run_doctor("--quick", "--no-teacher",
                                env=clean_env(TF_CONFIG=json.dumps(config))))
    assert f"TF_CONFIG: worker 1 (localhost:{other}) does not answer" in text, text


@pytest.mark.parametrize(("config", "message"), [
    ("{not json", "TF_CONFIG is not JSON"),
    ('["a"]', "TF_CONFIG is not an object with 'cluster' and 'task'"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     "task index 3 is not one of the 1 worker entries"),
    ('{"cluster": {"worker": ["localhost:x"]}, "task": {"type": "worker", "index": 0}}',
     "'localhost:x' is not host:port"),
    ('{"cluster": {"worker": ["nosuchhost.invalid:2222"]}, "task": {"type": "worker", '
     '"index": 0}}', "its own entry names host 'nosuchhost.invalid', not this machine"),
    ('{"cluster": {"chief": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}',
     "task type 'worker' has no entry in the cluster"),
])
def test_a_malformed_tf_config_is_a_problem(config, message):
    text = _problems(run_doctor("--quick", "--no-teacher", env=clean_env(TF_CONFIG=config)))
    assert message in text, text


def test_a_tf_config_whose_own_port_is_taken_is_a_problem():
    import socket

    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = {"cluster": {"worker": [f"localhost:{port}"]},
                  "task": {"type": "worker", "index": 0}}
        text = _problems(run_doctor("--quick", "--no-teacher",
                                    env=clean_env(TF_CONFIG=json.dumps(config))))
    assert f"its own port {port} is in use" in text, text


@pytest.mark.parametrize(("env", "message"), [
    ({"SLURM_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "4"},
     "SLURM_ARRAY_TASK_ID='abc' is not a whole number"),
    ({"SLURM_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "x"},
     "SLURM_ARRAY_TASK_COUNT='x' is not a whole number"),
    ({"IMNET64_ENGINE": "bogus"}, "IMNET64_ENGINE 'bogus': choose horovod or tf"),
])
def test_bad_launch_variables_are_problems(env, message):
    text = _problems(run_doctor("--quick", "--no-teacher", env=clean_env(**env)))
    assert message in text, text


def test_gpus_no_rank_will_use_inside_a_job_are_a_problem():
    """The README's example before issue 24: 4 GPUs granted per node, 1 task per node."""
    job = {"SLURM_JOB_ID": "9", "SLURM_NTASKS": "4", "SLURM_TASKS_PER_NODE": "1(x4)",
           "SLURM_JOB_NODELIST": "node[1-4]", "SLURM_NODEID": "0", "SLURMD_NODENAME": "node1",
           "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_GPUS": "0,1,2,3",
           "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    text = _problems(run_doctor("--quick", "--no-teacher", env=clean_env(**job)))
    assert "4 GPU(s) on this node but 1 rank(s) here: 3 GPU(s) no rank will use" in text, text
    # the same inside the srun step's task
    step = {**job, "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
            "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_TASKS_PER_NODE": "1(x4)",
            "SLURM_STEP_NODELIST": "node[1-4]", "PMIX_RANK": "0"}
    text = _problems(run_doctor("--quick", "--no-teacher", env=clean_env(**step)))
    assert "3 GPU(s) no rank will use" in text, text
    # one rank per GPU: no such problem
    fine = {**job, "SLURM_NTASKS": "16", "SLURM_TASKS_PER_NODE": "4(x4)"}
    done = run_doctor("--quick", "--no-teacher", env=clean_env(**fine))
    assert "no rank will use" not in done.stderr, done.stderr


def test_np_above_what_this_machine_holds_is_a_problem():
    done = run_doctor("--quick", "--no-teacher", "--np", "1000",
                      env=clean_env(CUDA_VISIBLE_DEVICES=""))
    assert "--np 1000: this machine holds at most" in _problems(done)
    done = run_doctor("--quick", "--no-teacher", "--np", "1", env=clean_env())
    assert "holds at most" not in done.stderr, done.stderr
