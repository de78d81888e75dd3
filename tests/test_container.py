"""The CPU image, run with podman the way users run the product: non-root, no network, read-only
image (as under Apptainer), data on a mounted volume.

The image is built by scripts/container-test.sh (`make container-test`), which passes its name
in IMNET64_TEST_IMAGE (and the image built from the spython translation of apptainer.def in
IMNET64_TEST_DEF_IMAGE). Run alone, the tests build it with `make image-cpu` (cached layers:
seconds when nothing changed, ~11 min from scratch on 2 busy cores).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.container

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def _podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def image() -> str:
    name = os.environ.get("IMNET64_TEST_IMAGE")
    if name:
        return name
    # Installs podman & co. when root with apt, else names what is missing and fails.
    subprocess.run(["scripts/container-setup.sh"], cwd=REPO, check=True)
    subprocess.run(["scripts/make-base-image.sh"], cwd=REPO, check=True)
    subprocess.run(["make", "--no-print-directory", "image-cpu", "ENGINE=podman",
                    "BUILD_FLAGS=--pull=never"], cwd=REPO, check=True)
    return "localhost/imnet64:cpu"


def _run(image: str, *args: str, entrypoint: str | None = None, volumes: tuple[str, ...] = (),
         user: str | None = None, timeout: float = 600,
         check: bool = True) -> subprocess.CompletedProcess:
    """`podman run` the way Apptainer runs the image on a cluster: no network, read-only image
    with a writable /tmp and home (Apptainer binds the user's), the given volumes. Or, with
    `user`, the way `docker run --user UID:GID` does: writable image, HOME from the image."""
    opts = ["run", "--rm", "--network=none"]
    if user:
        opts += ["--user", user]
    else:
        opts += ["--read-only", "--tmpfs", "/tmp", "-e", "HOME=/tmp"]
    if entrypoint:
        opts += ["--entrypoint", entrypoint]
    for v in volumes:
        opts += ["-v", v]
    return _podman(*opts, image, *args, timeout=timeout, check=check)


def test_image_metadata_entrypoint_user_environment(image: str) -> None:
    config = json.loads(_podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["imnet64"]
    assert config["User"] == "1000:1000"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["TF_USE_LEGACY_KERAS"] == "1"
    assert env["IMNET64_HOME"].startswith("/opt/")
    assert env["TFHUB_CACHE_DIR"].startswith("/opt/")
    assert config["Labels"]["io.imnet64.variant"] == "cpu"

    out = _run(image, "-c", 'id -u; command -v imnet64; imnet64 --version',
               entrypoint="/bin/sh").stdout.split()
    assert out[0] == "1000"  # not root
    assert out[1] == "/opt/venv/bin/imnet64"
    assert out[-1] == "0.1.0"


def test_no_compilers_in_the_runtime_image(image: str) -> None:
    # Horovod was compiled in the builder stage; the final image only installs its wheel.
    out = _run(image, "-c", "command -v g++ cmake nvcc; echo end", entrypoint="/bin/sh").stdout
    assert out.split() == ["end"]


def test_horovod_has_tensorflow_mpi_gloo(image: str) -> None:
    out = _run(image, "--check-build", entrypoint="horovodrun").stdout
    for part in ("TensorFlow", "MPI", "Gloo"):
        assert re.search(rf"\[X\] {part}\s*$", out, re.M), out


@pytest.mark.parametrize(("launcher", "user"), [("--gloo", None), ("--mpi", "4242:4242")])
def test_horovod_two_ranks_allreduce_inside_the_image(image: str, launcher: str,
                                                      user: str | None) -> None:
    # Each rank contributes rank+1; both must see the sum 3 (Keras 2 via TF_USE_LEGACY_KERAS).
    code = ("import imnet64, tensorflow as tf, horovod.tensorflow as hvd; hvd.init(); "
            "s = hvd.allreduce(tf.constant(float(hvd.rank() + 1)), op=hvd.Sum); "
            "print(f'rank {hvd.rank()}/{hvd.size()} sum {float(s):g} "
            "keras {tf.keras.__name__}')")
    out = _run(image, "-np", "2", "-H", "localhost:2", launcher, "python", "-c", code,
               entrypoint="horovodrun", user=user).stdout
    lines = sorted(re.findall(r"rank (\d)/(\d) sum (\S+) keras (\S+)", out))
    assert [(r, size, s) for r, size, s, _ in lines] == [("0", "2", "3"), ("1", "2", "3")], out
    assert all(k.startswith("tf_keras") for *_, k in lines), out  # Keras 2, as Horovod needs


def test_baked_offline_teacher_classifies_a_cat_without_network(image: str,
                                                                tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    Image.fromarray(data.chelsea()).save(tmp_path / "chelsea.png")
    tmp_path.chmod(0o755)  # readable by the image's user
    # --network=none and a read-only image: the teacher must already be in the image.
    out = _run(image, "teacher", "classify", "--teacher", "offline", "--json",
               "/in/chelsea.png", volumes=(f"{tmp_path}:/in:ro",)).stdout
    result = json.loads(out)
    top1 = result["images"][0]["top"][0]
    assert top1["name"] in CAT_CLASSES, result


def test_demo_runs_in_the_image_and_its_summary_adds_up(image: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)  # the image's user (uid 1000) writes here
    _run(image, "demo", "--quick", "--workdir", "/data/demo", volumes=(f"{work}:/data",),
         timeout=1200)
    summary = json.loads((work / "demo" / "summary.json").read_text())
    assert summary["inputs"] == summary["labeled"] + summary["rejected"] > 0
    assert summary["counts_add_up"] and summary["split_adds_up"]
    assert summary["train"] + summary["val"] == summary["after_filters"] > 0
    assert summary["rejected"] >= 4  # the demo's deliberately broken files
    assert summary["ranks"] == 2  # Horovod ranks launched inside the image
    assert 0.0 <= summary["student_teacher_agreement_val"] <= 1.0

    def on_host(path: str) -> Path:  # /data/... inside the container
        return work / Path(path).relative_to("/data")

    assert on_host(summary["curves"]).is_file()
    assert (on_host(summary["exported_model"]) / "saved_model.pb").is_file()


def test_image_from_apptainer_def_keeps_runscript_and_environment(image: str) -> None:
    def_image = os.environ.get("IMNET64_TEST_DEF_IMAGE")
    if not def_image:
        pytest.skip("IMNET64_TEST_DEF_IMAGE not set (scripts/container-test.sh builds it)")
    out = _run(def_image, "-c", "echo $IMNET64_HOME $TFHUB_CACHE_DIR $TF_USE_LEGACY_KERAS "
               "$PYTHONNOUSERSITE; imnet64 --version", entrypoint="/bin/sh").stdout.splitlines()
    assert out[0].split() == ["/opt/imnet64", "/opt/imnet64/tfhub", "1", "1"]
    assert out[1].endswith("0.1.0")
    labels = json.loads(_podman("image", "inspect", def_image).stdout)[0]["Config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "imnet64"


def test_make_sif_says_apptainer_is_missing(tmp_path: Path) -> None:
    path = "/usr/bin:/bin"
    if any(shutil.which(tool, path=path) for tool in ("apptainer", "singularity")):
        pytest.skip("Apptainer is installed here; `make sif` would build")
    proc = subprocess.run(["scripts/build-sif.sh", "imnet64:latest", str(tmp_path / "x.sif")],
                          cwd=REPO, capture_output=True, text=True, env={"PATH": path})
    assert proc.returncode == 1
    assert "needs Apptainer" in proc.stderr
    assert not (tmp_path / "x.sif").exists()
