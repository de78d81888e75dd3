"""Every command line the README (and docs/*.md) shows exists, at `--help` level: each
`imnet64 ...` line in a code block names a real command, and every option it gives exists for
that command; each `make TARGET` names a target of the Makefile. The front door is the line a
cluster user copies first, so it must not rot (issue 25: `submit pipeline --workdir` did).

The check walks click's command tree in-process (imnet64_cli.main.cli), so it imports each
command's module but runs nothing.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```")
INLINE_CODE = re.compile(r"`([^`]+)`")
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+)\s*:(?!=)")


@dataclass(frozen=True)
class ShownLine:
    """One command line as a document shows it."""

    document: str
    line_no: int
    text: str

    def __str__(self) -> str:
        return f"{self.document}:{self.line_no}: {self.text}"


def code_block_lines(path: Path) -> list[ShownLine]:
    """The lines inside fenced code blocks, with backslash continuations joined and a
    leading `$ ` prompt dropped."""
    shown: list[ShownLine] = []
    inside, pending, start = False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        text = line.strip()
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text, pending = (pending + text).removeprefix("$ "), ""
        shown.append(ShownLine(str(path.relative_to(REPO)), start, text))
    return shown


def inline_code_lines(path: Path) -> list[ShownLine]:
    """Inline code spans outside fenced blocks that run imnet64 (`srun imnet64 doctor
    --probe`, `imnet64 submit label|shard|train|pipeline [--dry-run]`)."""
    shown, inside = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            shown += [ShownLine(str(path.relative_to(REPO)), number, span)
                      for span in INLINE_CODE.findall(line) if "imnet64 " in span]
    return shown


def shown_lines(path: Path) -> list[ShownLine]:
    return code_block_lines(path) + inline_code_lines(path)


def words(text: str) -> list[str] | None:
    """The shell words of a line (comments dropped); None for output that is not shell."""
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote: a line of program output, not a command
        return None


def imnet64_invocations(line: ShownLine) -> list[list[str]]:
    """The words after each `imnet64` (or `.../bin/imnet64`) followed by a command name:
    `imnet64 label ...`, `srun imnet64 doctor`, `docker run ... imnet64 train ...` (there the
    first `imnet64` is the image and is followed by no command)."""
    from imnet64_cli.main import COMMANDS

    found = []
    tokens = words(line.text) or []
    for i, token in enumerate(tokens[:-1]):
        if (token == "imnet64" or token.endswith("/imnet64")) and tokens[i + 1] in COMMANDS:
            found += alternatives(tokens[i + 1:])
    return found


def alternatives(tokens: list[str]) -> list[list[str]]:
    """`submit label|shard` -> `submit label`, `submit shard` (a sub-command written as a
    choice)."""
    if len(tokens) > 1 and "|" in tokens[1] and not tokens[1].startswith(("-", "[")):
        return [[tokens[0], choice, *tokens[2:]] for choice in tokens[1].split("|")]
    return [tokens]


SHELL_SEPARATORS = ("&&", "||", ";", "|")


def make_invocations(line: ShownLine) -> list[list[str]]:
    """The words after each `make` that starts a shell command, up to the next separator."""
    tokens = words(line.text) or []
    found = []
    for i, token in enumerate(tokens):
        if token == "make" and (i == 0 or tokens[i - 1] in SHELL_SEPARATORS):
            rest = tokens[i + 1:]
            ends = [rest.index(s) for s in SHELL_SEPARATORS if s in rest]
            found.append(rest[:min(ends, default=len(rest))])
    return found


def resolve(tokens: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """Descend click's command tree along `tokens`: (the command, its path, the rest)."""
    from imnet64_cli.main import cli

    command: click.Command = cli
    path: list[str] = []
    rest = list(tokens)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        with click.Context(command, info_name=" ".join(["imnet64", *path])) as ctx:
            sub = command.get_command(ctx, rest[0])
        if sub is None:
            raise AssertionError(f"no command `imnet64 {' '.join([*path, rest[0]])}`")
        command, path, rest = sub, [*path, rest.pop(0)], rest
    return command, path, rest


def unknown_options(command: click.Command, args: list[str]) -> list[str]:
    """Options in `args` that `command` does not have. The word after an option that takes a
    value is that value (e.g. `--shard-args "--val-fraction 0.02"`), not an option."""
    options: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in [*param.opts, *param.secondary_opts]:
                options[name] = param
    helps = {"-h", "--help"}
    unknown, skip_value = [], False
    for arg in (a.strip("[]") for a in args):  # `[--format F]`: an optional part of a synopsis
        if skip_value:
            skip_value = False
            continue
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-" or re.fullmatch(r"-\d.*", arg):
            continue
        name = arg.split("=", 1)[0]
        if name in helps:
            continue
        if name not in options:
            unknown.append(name)
            continue
        option = options[name]
        skip_value = "=" not in arg and not option.is_flag and not option.count
    return unknown


def shown_imnet64_lines() -> list[tuple[ShownLine, list[str]]]:
    return [(line, tokens) for path in DOCUMENTS for line in shown_lines(path)
            for tokens in imnet64_invocations(line)]


def shown_make_lines() -> list[tuple[ShownLine, list[str]]]:
    return [(line, tokens) for path in DOCUMENTS for line in code_block_lines(path)
            for tokens in make_invocations(line)]


def makefile_targets() -> set[str]:
    return {m.group(1) for line in (REPO / "Makefile").read_text().splitlines()
            if (m := MAKE_TARGET.match(line))}


def problems_of(tokens: list[str]) -> list[str]:
    """What is wrong with one `imnet64 ...` invocation ([] if nothing)."""
    try:
        command, path, rest = resolve(tokens)
    except AssertionError as e:
        return [str(e)]
    if isinstance(command, click.Group) and not unknown_options(command, rest):
        return []
    if isinstance(command, click.Group):  # `imnet64 submit --log-dir`: each sub-command's
        with click.Context(command) as ctx:
            subs = [command.get_command(ctx, name) for name in command.list_commands(ctx)]
        return [f"`imnet64 {' '.join(path)} {sub.name}` has no option {name}"
                for sub in subs for name in unknown_options(sub, rest)]
    return [f"`imnet64 {' '.join(path)}` has no option {name}"
            for name in unknown_options(command, rest)]


IMNET64_LINES = shown_imnet64_lines()
MAKE_LINES = shown_make_lines()


def test_the_documents_show_the_commands_a_user_copies():
    """The extraction finds what the README shows (so an empty list cannot pass silently)."""
    shown = {" ".join(tokens[:2]) for _, tokens in IMNET64_LINES}
    for expected in ("teacher fetch", "doctor --probe", "submit pipeline", "label-status"):
        assert any(s.startswith(expected.split()[0]) for s in shown), (expected, shown)
    assert any(t[:2] == ["submit", "pipeline"] for _, t in IMNET64_LINES)
    assert {"demo", "test"} <= {t[0] for _, t in MAKE_LINES if t}


@pytest.mark.parametrize("line, tokens", IMNET64_LINES,
                         ids=[str(line) for line, _ in IMNET64_LINES])
def test_every_imnet64_line_names_a_command_and_its_options(line, tokens):
    assert problems_of(tokens) == [], str(line)


@pytest.mark.parametrize("line, tokens", MAKE_LINES, ids=[str(line) for line, _ in MAKE_LINES])
def test_every_make_line_names_a_target_of_the_makefile(line, tokens):
    targets = [t for t in tokens if not t.startswith("-") and "=" not in t]
    assert set(targets) <= makefile_targets(), (str(line), set(targets) - makefile_targets())


def test_the_checker_catches_a_wrong_option_and_a_wrong_command():
    """The checks themselves can fail: the README's old cluster line, and a made-up command."""
    old = ["submit", "pipeline", "--input", "/data/train_64x64", "--workdir", "/scratch/x"]
    assert problems_of(old) == ["`imnet64 submit pipeline` has no option --workdir"]
    assert problems_of(["submit", "pipeline", "--work", "/scratch/x", "--shards", "64"]) == []
    assert problems_of(["teacher", "fetchh", "x"]) == ["no command `imnet64 teacher fetchh`"]
    # a value that looks like an option is the option's value, not an option
    assert problems_of(["submit", "shard", "--shard-args", "--val-fraction 0.02"]) == []
    assert problems_of(["submit", "--log-dir", "logs"]) == []  # every submit command has it
    assert problems_of(["submit", "--engine", "tf"]) == [
        "`imnet64 submit label` has no option --engine",
        "`imnet64 submit shard` has no option --engine"]
    assert "nope" not in makefile_targets() and "demo" in makefile_targets()
