"""Hostile option values for `imnet64 submit`: every value either refused with a one-line
error, or inert in the rendered job script.

The options are enumerated from the click commands, so a new option is covered without
touching this file. A value is inert when the rendered script is the template with only
`#SBATCH` lines and quoted `export` lines added: no other line changed or added, every
`#SBATCH` line still in the leading directive block (sbatch stops reading directives at
the first command), each directive one argument as sbatch's own tokenizer reads it, and
each export giving bash exactly the value Python meant.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from imnet64.cluster import slurm_submit as sb
from imnet64.errors import UserError

import click
import pytest
from imnet64_cli.main import main
from imnet64_cli.submit_cmd import submit as submit_group

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "slurm"
MARK = "touch pwned"  # what an injected command would run

PAYLOADS = {
    "newline": f"x\n{MARK}",
    "cr": f"x\r{MARK}",
    "nul": f"x\x00{MARK}",
    "tab": f"x\t{MARK}",
    "escape": f"x\x1b[2J{MARK}",
    "del": f"x\x7f{MARK}",
    "c1-nel": f"x\x85{MARK}",
    "line-separator": f"x\u2028{MARK}",
    "semicolon": f"x;{MARK}",
    "dollar-paren": f"x$({MARK})",
    "backticks": f"x`{MARK}`",
    "single-quotes": f"x'; {MARK}; '",
    "double-quotes": f'x"; {MARK}; "',
}
# Characters no value may carry at all, whatever the option.
CONTROL = {"newline", "cr", "nul", "tab", "escape", "del", "c1-nel", "line-separator"}
# How a payload is passed to an option: as the whole value, and for --sbatch-arg also as
# the value of a known and of an unknown sbatch option, and as the option name.
FORMS = {"--sbatch-arg": ["{}", "--qos={}", "--comment={}", "--{}", "--hold{}"]}


def _long_name(option: click.Option) -> str:
    return next(o for o in option.opts if o.startswith("--"))


def _cases() -> list[tuple[str, str]]:
    cases = []
    for name, command in sorted(submit_group.commands.items()):
        for param in command.params:
            if isinstance(param, click.Option) and not param.is_flag:
                cases.append((name, _long_name(param)))
    return cases


CASES = _cases()


def test_the_cases_cover_every_option_of_every_submit_command():
    names = {name for name, _ in CASES}
    assert names == {"label", "shard", "train", "pipeline"}
    options = {opt for _, opt in CASES}
    for must in ("--partition", "--account", "--time", "--job-name", "--sbatch-arg",
                 "--signal", "--label-time", "--train-time", "--cmd", "--image",
                 "--label-args", "--template", "--log-dir"):
        assert must in options
    assert len(CASES) > 60


def run_submit(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["submit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def split_scripts(subcommand: str, out: str) -> dict[str, str]:
    if subcommand != "pipeline":
        return {subcommand: out}
    parts = re.split(r"^# ---- (\w+) -+\n", out, flags=re.M)
    assert parts[0] == "", parts[0]
    return dict(zip(parts[1::2], parts[2::2]))


def sbatch_arguments(text: str) -> list[str]:
    """The arguments sbatch reads from the rest of an `#SBATCH` line: a Python copy of
    `_get_argument` in Slurm's src/sbatch/opt.c (whitespace splits, quotes and backslash
    are consumed, an unquoted # starts a comment; "packjob"/"hetjob" become blanks)."""
    for word in ("packjob", "hetjob"):
        text = re.sub(word, " " * len(word), text, flags=re.I)
    args, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return args
        arg, quote, escape = [], "", False
        while i < len(text) and (quote or not text[i].isspace()) and text[i] != "\n":
            c = text[i]
            if escape:
                escape = False
            elif c == "\\":
                escape, i = True, i + 1
                continue
            elif quote:
                if c == quote:
                    quote, i = "", i + 1
                    continue
            elif c in "\"'":
                quote, i = c, i + 1
                continue
            elif c == "#":
                return args + (["".join(arg)] if arg else [])
            arg.append(c)
            i += 1
        assert not quote, f"sbatch would die: unmatched {quote} in {text!r}"
        args.append("".join(arg))


def directive_block(script: str) -> list[str]:
    """The lines sbatch reads directives from: up to the first command line."""
    block = []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        block.append(line)
    return block


SETTINGS_HEADER = "# Settings from `imnet64 submit`:"


def settings_block(lines: list[str]) -> list[str]:
    """The export lines `imnet64 submit` added (right after its header line)."""
    if SETTINGS_HEADER not in lines:
        return []
    block = []
    for line in lines[lines.index(SETTINGS_HEADER) + 1:]:
        if not line.startswith("export IMNET64_"):
            break
        block.append(line)
    return block


def check_inert(stage: str, script: str, payload: str, tmp_path: Path) -> None:
    """The rendered script is its template plus #SBATCH and quoted export lines only."""
    template = (SLURM / sb.TEMPLATE_FILES[stage]).read_text()
    lines = script.splitlines()
    exports = settings_block(lines)
    # 1. nothing but #SBATCH / export lines added or changed
    added = {SETTINGS_HEADER, *exports}
    body = [ln for ln in lines if not ln.startswith("#SBATCH") and ln not in added]
    assert body == [ln for ln in template.splitlines() if not ln.startswith("#SBATCH")]
    # 2. every directive in the leading block, each exactly one sbatch argument
    block = directive_block(script)
    directives = [ln for ln in lines if ln.startswith("#SBATCH")]
    assert directives == [ln for ln in block if ln.startswith("#SBATCH")]
    wanted = {m.group(1) for m in map(sb._SBATCH_LINE.match, template.splitlines()) if m}
    have = {ln.split()[1].split("=")[0] for ln in directives}
    assert wanted <= have, wanted - have
    for line in directives:
        text = line[len("#SBATCH"):]
        assert sbatch_arguments(text) == [text.strip()], line
        assert MARK not in line
    # 3. the marker only inside exports, and bash sees each export as Python meant it
    assert not any(MARK in ln for ln in lines if ln not in exports)
    meant = {}
    for line in exports:
        words = shlex.split(line)
        assert len(words) == 2 and words[0] == "export", line
        name, _, value = words[1].partition("=")
        assert re.fullmatch(r"IMNET64_[A-Z0-9_]+", name), line
        meant[name] = value
    path = tmp_path / f"{stage}.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    probe = "\n".join(["set -u", *exports]
                      + [f'printf "%s\\0" "${{{name}}}"' for name in meant])
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    done = subprocess.run(["bash", "-c", probe], capture_output=True, cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split("\0")[:-1] == list(meant.values())
    assert not list(work.iterdir())  # nothing ran
    assert any(payload in value for value in meant.values()) or not any(
        MARK in ln for ln in lines)


def check_refused(option: str, payload_name: str, code: int, out: str, err: str) -> None:
    assert code != 0, out
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, repr(err)
    assert option in err, err
    if payload_name in CONTROL:
        char = PAYLOADS[payload_name][1]
        assert f"U+{ord(char):04X}" in err, err


@pytest.mark.parametrize(("subcommand", "option"), CASES)
def test_hostile_values_are_refused_or_inert(subcommand, option, capsys, tmp_path,
                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    for form in FORMS.get(option, ["{}"]):
        for payload_name, payload in PAYLOADS.items():
            value = form.format(payload)
            code, out, err = run_submit(capsys, subcommand, option, value, "--dry-run")
            where = f"{subcommand} {option} {value!r}"
            if payload_name in CONTROL or code != 0:
                try:
                    check_refused(option, payload_name, code, out, err)
                except AssertionError as e:
                    raise AssertionError(f"{where}: {e}") from None
                continue
            for stage, script in split_scripts(subcommand, out).items():
                try:
                    check_inert(stage, script, payload, tmp_path)
                except AssertionError as e:
                    raise AssertionError(f"{where} ({stage} script): {e}") from None


@pytest.mark.parametrize("subcommand", ["label", "shard", "train", "pipeline"])
def test_directive_options_refuse_everything_shell_or_sbatch_would_read(subcommand, capsys):
    for option in ("--partition", "--account", "--time", "--job-name", "--log-dir"):
        for payload in PAYLOADS.values():
            code, out, err = run_submit(capsys, subcommand, option, payload, "--dry-run")
            assert code == 2 and out == "", (option, payload)
            assert err.startswith(f"error: {option} ") and err.count("\n") == 1, err


def test_partition_newline_injection_from_the_issue_is_refused_by_the_real_command(tmp_path):
    exe = Path(sys.executable).parent / "imnet64"
    done = subprocess.run([str(exe), "submit", "label", "--dry-run", "--partition",
                           "debug\ntouch pwned"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("error: --partition 'debug\\ntouch pwned': control character "
                           "U+000A (newline) is not allowed\n")
    assert not (tmp_path / "pwned").exists()


def test_job_name_injection_no_longer_drops_the_later_directives(capsys):
    code, out, err = run_submit(capsys, "train", "--dry-run", "--job-name",
                                f"imnet64-train\n{MARK}")
    assert code == 2 and out == "" and "--job-name" in err
    code, out, err = run_submit(capsys, "train", "--dry-run", "--job-name", "my-run.v2")
    assert code == 0, err
    block = directive_block(out)
    assert "#SBATCH --job-name=my-run.v2" in block
    for expected in ("--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=1", "--time=12:00:00",
                     "--signal=B:USR1@120", "--requeue", "--open-mode=append"):
        assert f"#SBATCH {expected}" in block


@pytest.mark.parametrize("value", ["90", "30:00", "4:00:00", "2-0", "2-12:00", "1-02:03:04",
                                   "UNLIMITED", "infinite", "0"])
def test_time_formats_of_sbatch_are_accepted(value, capsys):
    code, out, err = run_submit(capsys, "shard", "--time", value, "--dry-run")
    assert code == 0, err
    assert f"#SBATCH --time={value}" in directive_block(out)


@pytest.mark.parametrize("value", ["", "1h", "4:00:00:00", "-5", "1-", "2-3-4", "1:", ":30",
                                   "１:00", "4:00 ", "forever"])
def test_other_time_values_are_refused(value, capsys):
    code, out, err = run_submit(capsys, "pipeline", "--train-time", value, "--dry-run")
    assert code == 2 and out == ""
    assert err.startswith("error: --train-time ") and err.count("\n") == 1, err


@pytest.mark.parametrize(("args", "line"), [
    (["--partition", "gpu,gpu-long"], "#SBATCH --partition=gpu,gpu-long"),
    (["--account", "proj_42.a-b"], "#SBATCH --account=proj_42.a-b"),
    (["--sbatch-arg=--qos=high"], "#SBATCH --qos=high"),
    (["--sbatch-arg=--signal=RB:USR2@90"], "#SBATCH --signal=RB:USR2@90"),
    (["--sbatch-arg=--constraint=(a100&ib)|v100"], "#SBATCH --constraint=(a100&ib)|v100"),
    (["--sbatch-arg=--gres=gpu:a100:2"], "#SBATCH --gres=gpu:a100:2"),
    (["--sbatch-arg=--mail-user=me@example.org"], "#SBATCH --mail-user=me@example.org"),
    (["--sbatch-arg=--exclusive"], "#SBATCH --exclusive"),
    (["--log-dir", "logs/100%"], "#SBATCH --output={cwd}/logs/100%%/%x-%j.log"),
])
def test_ordinary_values_still_render(args, line, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_submit(capsys, "shard", *args, "--dry-run")
    assert code == 0, err
    block = directive_block(out)
    line = line.format(cwd=tmp_path)
    assert line in block
    assert sbatch_arguments(line[len("#SBATCH"):]) == [line[len("#SBATCH "):]]


@pytest.mark.parametrize(("args", "message"), [
    (["--sbatch-arg=--signal=USR1;x"], "--sbatch-arg '--signal=USR1;x'"),
    (["--sbatch-arg=--time=1h"], "--sbatch-arg '--time=1h'"),
    (["--sbatch-arg=--qos=a b"], "--sbatch-arg '--qos=a b'"),
    (["--sbatch-arg=--comment=a#b"], "'#'"),
    (["--sbatch-arg=--comment=myhetjob"], "hetjob"),
    (["--sbatch-arg=--9x"], "--sbatch-arg '--9x'"),
    (["--sbatch-arg=--q_s=1"], "--sbatch-arg '--q_s=1'"),
    (["--job-name", "my job"], "--job-name 'my job'"),
    (["--job-name", "x/../y"], "--job-name"),
    (["--partition", "gpu,"], "--partition 'gpu,'"),
    (["--account", "a,b"], "--account 'a,b'"),
    (["--log-dir", "my logs"], "--log-dir"),
    (["--ntasks", "4\n"], "--ntasks"),
    (["--ntasks", "٤"], "--ntasks"),
    (["--template", "missing.sh"], "--template"),
])
def test_bad_values_are_one_line_errors_naming_the_option(args, message, capsys, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_submit(capsys, "shard", *args, "--dry-run")
    assert code == 2 and out == "", err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_the_renderer_itself_refuses_a_newline(tmp_path):
    template = (SLURM / "train.sh").read_text()
    with pytest.raises(UserError, match="U\\+000A"):
        sb.render(template, {"--job-name": f"x\n{MARK}"}, {})
    with pytest.raises(UserError, match="U\\+000A"):
        sb.render(template, {}, {"IMNET64_CMD": f"imnet64\n{MARK}"})
    with pytest.raises(UserError, match="whitespace"):
        sb.render(template, {"--comment": "a --uid=0"}, {})
    with pytest.raises(UserError):
        sb.render(template, {"--x\n": ""}, {})
    with pytest.raises(UserError):
        sb.render(template, {}, {"IMNET64_X;touch": "1"})


def test_a_template_with_a_command_before_its_last_directive_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine.sh"
    text = (SLURM / "shard.sh").read_text().replace(
        "#SBATCH --ntasks=4\n", "echo hello\n#SBATCH --ntasks=4\n")
    mine.write_text(text)
    code, out, err = run_submit(capsys, "shard", "--template", str(mine), "--dry-run")
    assert code == 2 and out == ""
    assert err.startswith("error: --template ") and "line" in err and err.count("\n") == 1


def test_values_reach_the_script_environment_unchanged(tmp_path, capsys, monkeypatch):
    """Odd but legal free text (paths with spaces and quotes, args with $ and ;) is kept
    exactly, inside single-quoted exports."""
    monkeypatch.chdir(tmp_path)
    odd = "it's a $HOME; `dir` \"x\""
    code, out, err = run_submit(capsys, "label", "--input", odd, "--teacher", odd,
                                "--label-args", odd, "--cmd", odd, "--dry-run")
    assert code == 0, err
    check_inert("label", out, odd, tmp_path)
    env = dict(shlex.split(ln)[1].split("=", 1) for ln in out.splitlines()
               if ln.startswith("export "))
    assert env["IMNET64_INPUT"] == os.path.join(str(tmp_path), odd)
    assert env["IMNET64_TEACHER"] == env["IMNET64_LABEL_ARGS"] == env["IMNET64_CMD"] == odd
