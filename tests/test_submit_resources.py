"""`imnet64 submit` values that contradict each other or the hardware they ask for (issue 24,
items 3, 4, 6), through `--dry-run` (the script sbatch would get):

- ranks per node follow GPUs per node (one rank per GPU) unless given; an explicit
  mismatch is refused unless `--allow-gpu-mismatch`;
- `submit label` asks for GPUs, CPUs and memory per task, each value checked, with the
  template's defaults;
- `--signal KILL`/`STOP` (uncatchable) are refused; `--signal-time` must be shorter than the
  time limit; `--max-restarts` must be a number train.sh can compare.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from imnet64.cluster import slurm_submit as sb
from imnet64.cluster.slurm_stage_jobs import Common, TrainSettings

import pytest
from imnet64_cli.main import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["submit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def sbatch_lines(script: str) -> list[str]:
    return [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]


def refused(capsys, *args: str) -> str:
    """The one error line of `submit ARGS --dry-run`, which must fail with exit 2."""
    code, out, err = run_cli(capsys, *args, "--dry-run")
    assert code == 2 and out == "", (args, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# -- item 3: one rank per GPU ------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["train", "pipeline"])
def test_ranks_per_node_follow_gpus_per_node(stage, capsys):
    """The README's own example: 4 nodes x 4 GPUs must start 4 ranks per node, not 1."""
    code, out, err = run_cli(capsys, stage, "--nodes", "4", "--gpus-per-node", "4", "--dry-run")
    assert code == 0, err
    lines = sbatch_lines(out)
    assert "#SBATCH --gpus-per-node=4" in lines
    assert "#SBATCH --ntasks-per-node=4" in lines
    assert "#SBATCH --ntasks-per-node=1" not in lines


def test_gpus_given_as_a_raw_sbatch_arg_also_set_the_ranks(capsys):
    code, out, err = run_cli(capsys, "train", "--sbatch-arg=--gpus-per-node=a100:2",
                             "--dry-run")
    assert code == 0, err
    assert "#SBATCH --ntasks-per-node=2" in sbatch_lines(out)


@pytest.mark.parametrize("stage", ["train", "pipeline"])
@pytest.mark.parametrize(("ranks", "gpus", "why"), [
    ("1", "4", "3 of the 4 GPUs per node would sit idle"),
    ("4", "1", "4 ranks would share 1 GPU"),
])
def test_an_explicit_rank_gpu_mismatch_is_refused(stage, ranks, gpus, why, capsys):
    err = refused(capsys, stage, "--gpus-per-node", gpus, "--ntasks-per-node", ranks)
    assert why in err and "--allow-gpu-mismatch" in err


def test_ranks_without_gpus_given_meet_the_templates_one_gpu(capsys):
    """--ntasks-per-node 4 alone: the template asks 1 GPU per node; 4 ranks on it."""
    err = refused(capsys, "train", "--ntasks-per-node", "4")
    assert "4 ranks would share 1 GPU" in err and "--gpus-per-node" in err


def test_the_mismatch_flag_and_cpu_clusters(capsys):
    code, out, err = run_cli(capsys, "train", "--gpus-per-node", "4", "--ntasks-per-node", "1",
                             "--allow-gpu-mismatch", "--dry-run")
    assert code == 0, err
    assert "#SBATCH --ntasks-per-node=1" in sbatch_lines(out)
    # no GPUs at all: any number of ranks per node
    code, out, err = run_cli(capsys, "train", "--gpus-per-node", "0", "--ntasks-per-node", "8",
                             "--dry-run")
    assert code == 0, err
    assert "#SBATCH --ntasks-per-node=8" in sbatch_lines(out)


# -- item 4: label resources -------------------------------------------------------------------


def test_label_resources_render_and_have_stated_defaults(capsys):
    code, out, err = run_cli(capsys, "label", "--gpus-per-task", "1", "--cpus-per-task", "8",
                             "--mem-per-task", "16G", "--dry-run")
    assert code == 0, err
    lines = sbatch_lines(out)
    for line in ("--gpus-per-task=1", "--cpus-per-task=8", "--mem=16G"):
        assert f"#SBATCH {line}" in lines
    assert sum(ln.startswith("#SBATCH --mem") for ln in lines) == 1  # replaced, not added
    # without options: the template's defaults (no GPU, CPUs and memory from the bench)
    code, out, err = run_cli(capsys, "label", "--dry-run")
    assert code == 0, err
    lines = sbatch_lines(out)
    assert "#SBATCH --cpus-per-task=2" in lines and "#SBATCH --mem=3G" in lines
    assert not any("gpu" in ln for ln in lines)
    # --gpus-per-task 0 drops a GPU request; the pipeline's label job takes them too
    code, out, err = run_cli(capsys, "pipeline", "--gpus-per-task", "2", "--mem-per-task",
                             "6000M", "--dry-run")
    assert code == 0, err
    label = out.split("# ---- shard")[0]
    assert "#SBATCH --gpus-per-task=2" in label and "#SBATCH --mem=6000M" in label


def test_label_sh_states_why_its_defaults():
    text = (REPO / "slurm" / "label.sh").read_text()
    assert "1,858" in text  # the measured peak RSS the memory default is made of


@pytest.mark.parametrize(("args", "message"), [
    (["--mem-per-task", "lots"], "--mem-per-task 'lots'"),
    (["--mem-per-task", "4 G"], "--mem-per-task '4 G'"),
    (["--mem-per-task", "4G;id"], "--mem-per-task '4G;id'"),
    (["--mem-per-task", "0"], "--mem-per-task '0'"),
    (["--mem-per-task", "-4G"], "--mem-per-task '-4G'"),
    (["--cpus-per-task", "0"], "--cpus-per-task must be at least 1"),
    (["--cpus-per-task", "two"], "--cpus-per-task 'two'"),
    (["--gpus-per-task", "-1"], "--gpus-per-task '-1'"),
    (["--gpus-per-task", "1\n"], "--gpus-per-task"),
])
def test_bad_label_resources_are_one_line_errors(args, message, capsys):
    assert message in refused(capsys, "label", *args)


# -- item 6: signals, times and restarts -------------------------------------------------------


@pytest.mark.parametrize("stage", ["train", "pipeline"])
@pytest.mark.parametrize("sig", ["KILL", "SIGSTOP", "9", "sigkill"])
def test_uncatchable_signals_are_refused(stage, sig, capsys):
    err = refused(capsys, stage, "--signal", sig)
    assert "--signal" in err and "cannot be caught" in err


def test_an_uncatchable_wake_up_signal_for_the_script_is_refused(capsys):
    err = refused(capsys, "train", "--sbatch-arg=--signal=B:KILL@60")
    assert "cannot be caught" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--signal-time", "7200", "--time", "1:00:00"],
     "--signal-time 7200 s is not shorter than the time limit 1:00:00 (3600 s)"),
    (["--signal-time", "60", "--time", "1"], "--signal-time 60 s is not shorter"),
    # the template's own warning (120 s) against a 1-minute --time
    (["--time", "1"], "the template's signal time 120 s is not shorter than the time limit"),
    (["--signal-time", "90000", "--sbatch-arg=--time=1-00:00"], "(86400 s)"),
])
def test_a_signal_time_not_shorter_than_the_time_limit_is_refused(args, message, capsys):
    assert message in refused(capsys, "train", *args)


def test_pipeline_checks_the_train_time(capsys):
    err = refused(capsys, "pipeline", "--signal-time", "600", "--train-time", "5")
    assert "--signal-time 600 s is not shorter than the time limit 5 (300 s)" in err
    # a short label time does not matter to the training job's signal
    code, _, err = run_cli(capsys, "pipeline", "--signal-time", "600", "--label-time", "5",
                           "--dry-run")
    assert code == 0, err


@pytest.mark.parametrize("value", ["2:00:00", "UNLIMITED", "1-0"])
def test_consistent_times_still_render(value, capsys):
    code, out, err = run_cli(capsys, "train", "--signal-time", "300", "--time", value,
                             "--dry-run")
    assert code == 0, err
    assert "#SBATCH --signal=B:USR1@300" in sbatch_lines(out)


def test_max_restarts_train_sh_cannot_compare_is_refused(capsys):
    err = refused(capsys, "train", "--max-restarts", "99999999999999999999")
    assert "--max-restarts" in err and "at most" in err
    with pytest.raises(sb.UserError, match="--max-restarts"):
        TrainSettings(max_restarts=10**18).job(Common())
    code, out, err = run_cli(capsys, "train", "--max-restarts", str(10**18 - 1), "--dry-run")
    assert code == 0, err  # the largest train.sh takes (18 digits)


@pytest.mark.parametrize("value", ["abc", "-1", str(10**18), "3 4", "0x10"])
def test_train_sh_itself_refuses_a_max_restarts_it_cannot_compare(value, tmp_path):
    """Set by hand (no `submit`): train.sh stops before starting anything, exit 2."""
    done = subprocess.run(["bash", str(REPO / "slurm" / "train.sh")], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "IMNET64_MAX_RESTARTS": value,
                               "IMNET64_CMD": "echo"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "IMNET64_MAX_RESTARTS" in done.stderr and done.stdout == ""
