"""`imnet64 submit --dry-run` and the templates' own logic, without a cluster.

The rendered scripts must be valid bash and shellcheck-clean; the templates' settings must
reach the imnet64 command line (checked by running label.sh with `echo` as the tool).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from imnet64.cluster import slurm_submit as sb
from imnet64.cluster.preemption import DEFAULT_SIGNAL, REQUEUE_EXIT_CODE
from imnet64.cluster.slurm_stage_jobs import Common, TrainSettings

import pytest
from imnet64_cli.main import main

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "slurm"
OUR_SCRIPTS = [*sorted(SLURM.glob("*.sh")), REPO / "scripts" / "slurm-local.sh"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["submit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def sbatch_lines(script: str) -> list[str]:
    return [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]


def shellcheck(script: str, tmp_path: Path, name: str = "rendered.sh") -> None:
    path = tmp_path / name
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    done = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_shellcheck_is_clean_on_the_templates_and_scripts():
    assert shutil.which("shellcheck"), "shellcheck missing: `make install` installs it"
    done = subprocess.run(["shellcheck", *map(str, OUR_SCRIPTS)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout


def test_label_dry_run_sets_array_settings_and_log_dir(capsys, tmp_path):
    code, out, err = run_cli(
        capsys, "label", "--shards", "4", "--max-parallel", "2", "--input", str(tmp_path),
        "--teacher", "offline", "--label-args", "--batch-size 32", "--partition", "gpu",
        "--log-dir", str(tmp_path / "logs"), "--dry-run")
    assert code == 0, err
    lines = sbatch_lines(out)
    assert "#SBATCH --array=0-3%2" in lines
    assert "#SBATCH --partition=gpu" in lines
    assert f"#SBATCH --output={tmp_path}/logs/%x-%A_%a.log" in lines
    assert sum(ln.startswith("#SBATCH --array") for ln in lines) == 1  # replaced, not added
    assert "export IMNET64_NUM_SHARDS=4" in out
    assert f"export IMNET64_INPUT={tmp_path}" in out
    assert "export IMNET64_TEACHER=offline" in out
    assert "export IMNET64_LABEL_ARGS='--batch-size 32'" in out
    assert re.search(r"^export IMNET64_CMD=\S+/imnet64$", out, re.M)
    # the settings come after every #SBATCH line (sbatch stops reading at the first command)
    assert out.index("export IMNET64_") > out.index(lines[-1])
    shellcheck(out, tmp_path)
    assert not (tmp_path / "logs").exists()  # a dry run creates nothing


def test_train_dry_run_nodes_gpus_signal(capsys, tmp_path):
    code, out, err = run_cli(
        capsys, "train", "-N", "4", "--ntasks-per-node", "4", "--gpus-per-node", "4",
        "--signal", "sigusr2", "--signal-time", "300", "--time", "2:00:00",
        "--image", str(tmp_path / "imnet64.sif"), "--train-args", "--epochs 40", "--dry-run")
    assert code == 0, err
    lines = sbatch_lines(out)
    for expected in ("--nodes=4", "--ntasks-per-node=4", "--gpus-per-node=4",
                     "--signal=B:USR1@300", "--time=2:00:00", "--requeue", "--open-mode=append"):
        assert f"#SBATCH {expected}" in lines
    assert "export IMNET64_SIGNAL=USR2" in out
    assert f"export IMNET64_IMAGE={tmp_path}/imnet64.sif" in out
    assert "export IMNET64_CMD" not in out  # the image decides how imnet64 runs
    shellcheck(out, tmp_path)
    # --gpus-per-node 0 (CPU cluster): no GPU request at all
    code, out, _ = run_cli(capsys, "train", "--gpus-per-node", "0", "--dry-run")
    assert code == 0 and "--gpus-per-node" not in "\n".join(sbatch_lines(out))


def test_pipeline_dry_run_chains_three_scripts(capsys, tmp_path):
    code, out, err = run_cli(
        capsys, "pipeline", "--input", str(tmp_path / "img"), "--work", str(tmp_path),
        "--shards", "3", "--shard-tasks", "2", "--nodes", "2", "--label-time", "1:00:00",
        "--train-time", "8:00:00", "--label-dir", str(tmp_path / "lab"), "--dry-run")
    assert code == 0, err
    scripts = re.split(r"^# ---- (\w+) -+$", out, flags=re.M)[1:]
    stages = dict(zip(scripts[::2], scripts[1::2]))
    assert list(stages) == ["label", "shard", "train"]
    assert "#SBATCH --array=0-2" in stages["label"]
    assert "#SBATCH --time=1:00:00" in stages["label"]
    assert "#SBATCH --time=00:30:00" in stages["shard"]  # the template's own
    assert "#SBATCH --time=8:00:00" in stages["train"]
    assert "#SBATCH --dependency" not in stages["label"]
    assert "#SBATCH --dependency=afterok:<label-job-id>" in stages["shard"]
    assert "#SBATCH --dependency=afterok:<shard-job-id>" in stages["train"]
    assert "#SBATCH --ntasks=2" in stages["shard"] and "#SBATCH --nodes=2" in stages["train"]
    # the shard job reads what the label job writes
    for stage in ("label", "shard"):
        assert f"export IMNET64_LABEL_DIR={tmp_path}/lab" in stages[stage]
    for script in stages.values():
        assert f"export IMNET64_WORK={tmp_path}" in script


def test_bad_options_are_one_line_errors(capsys):
    for args, message in [
        (["train", "--signal", "NOPE", "--dry-run"], "unknown signal 'NOPE'"),
        (["label", "--shards", "0", "--dry-run"], "--shards must be at least 1"),
        (["label", "--missing-only", "--dry-run"], "--missing-only needs --label-dir"),
        (["shard", "--sbatch-arg", "qos=high", "--dry-run"], "long sbatch options"),
        (["train", "-N", "0", "--dry-run"], "--nodes must be at least 1"),
    ]:
        code, out, err = run_cli(capsys, *args)
        assert code == 2, (args, out, err)
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_missing_sbatch_is_a_one_line_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    code, out, err = run_cli(capsys, "shard")
    assert code == 2 and out == ""
    assert err.startswith("error: sbatch not found on PATH") and err.count("\n") == 1


def test_array_spec():
    assert sb.array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert sb.array_spec([3]) == "3"
    assert sb.array_spec(list(range(64)), 8) == "0-63%8"


def test_missing_label_shards_of_a_folder_not_made_yet(tmp_path):
    from imnet64.pipeline.submit import missing_label_shards

    assert missing_label_shards(tmp_path / "nothing", 3) == [0, 1, 2]


def test_template_defaults_match_the_trainer():
    text = (SLURM / "train.sh").read_text()
    assert f"requeue_exit=${{IMNET64_REQUEUE_EXIT:-{REQUEUE_EXIT_CODE}}}" in text
    assert f"sig=${{IMNET64_SIGNAL:-{DEFAULT_SIGNAL}}}" in text


def label_sh(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """slurm/label.sh as Slurm would run it, with `echo` standing in for imnet64."""
    base = {"PATH": os.environ["PATH"], "IMNET64_CMD": "echo imnet64",
            "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_ARRAY_JOB_ID": "7"}
    return subprocess.run(["bash", str(SLURM / "label.sh")], env={**base, **env},
                          capture_output=True, text=True, cwd=tmp_path)


def array(task: int, lo: int, hi: int, count: int) -> dict[str, str]:
    return {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(lo),
            "SLURM_ARRAY_TASK_MAX": str(hi), "SLURM_ARRAY_TASK_COUNT": str(count)}


def test_label_sh_passes_its_settings_to_imnet64(tmp_path):
    done = label_sh(tmp_path, **array(2, 0, 3, 4))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"imnet64 label {tmp_path}/work/images {tmp_path}/work/labeled "
        "--shard-index 2 --num-shards 4")
    done = label_sh(tmp_path, **array(5, 3, 5, 2), IMNET64_NUM_SHARDS="8",
                    IMNET64_INPUT="/data/in", IMNET64_LABEL_DIR="/data/out",
                    IMNET64_TEACHER="offline", IMNET64_LABEL_ARGS="--batch-size 16 --force")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "imnet64 label /data/in /data/out --shard-index 5 --num-shards 8 --teacher offline "
        "--batch-size 16 --force")


def test_label_sh_refuses_a_partial_array_without_the_shard_count(tmp_path):
    done = label_sh(tmp_path, **array(5, 3, 5, 2))
    assert done.returncode == 2
    assert "set IMNET64_NUM_SHARDS" in done.stderr and done.stdout == ""
    done = label_sh(tmp_path)  # not an array job at all
    assert done.returncode == 2 and "run me as an array job" in done.stderr


@pytest.mark.parametrize("stage", sb.STAGES)
def test_each_template_renders_to_clean_bash(stage, tmp_path):
    job = sb.Job(stage, {"--partition": "p", "--qos": "high", "--time": None},
                 {"IMNET64_WORK": "/a dir/with 'quotes'"})
    script = job.render()
    assert "#SBATCH --qos=high" in script and "#SBATCH --time" not in script
    assert "export IMNET64_WORK='/a dir/with '\"'\"'quotes'\"'\"''" in script
    shellcheck(script, tmp_path, f"{stage}.sh")


def test_max_restarts_sets_the_requeue_cap_train_sh_reads(capsys):
    code, out, err = run_cli(capsys, "train", "--max-restarts", "3", "--dry-run")
    assert code == 0, err
    assert "export IMNET64_MAX_RESTARTS=3" in out
    assert "max_restarts=${IMNET64_MAX_RESTARTS:-50}" in out  # what train.sh reads
    code, out, err = run_cli(capsys, "train", "--max-restarts", "0", "--dry-run")
    assert code == 0 and "export IMNET64_MAX_RESTARTS=0" in out, err
    code, out, err = run_cli(capsys, "pipeline", "--max-restarts", "7", "--dry-run")
    assert code == 0 and out.count("export IMNET64_MAX_RESTARTS=7") == 1, err  # train only
    code, out, err = run_cli(capsys, "train", "--max-restarts", "-1", "--dry-run")
    assert code == 2 and out == "" and err.startswith("error: --max-restarts '-1'"), err
    for bad in (-1, True, "3", 2.0):
        with pytest.raises(sb.UserError, match="--max-restarts"):
            TrainSettings(max_restarts=bad).job(Common())


def test_a_requeued_label_task_names_only_itself(tmp_path):
    done = label_sh(tmp_path, **array(2, 0, 3, 4), SLURM_JOB_ID="913", SLURM_RESTART_COUNT="1")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert "task 7_2 restart 1 " in first and "913" not in first, first
    assert "#SBATCH --open-mode=append" in (SLURM / "label.sh").read_text()  # kept on requeue
