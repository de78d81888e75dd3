"""The grammar of every value imnet64 writes into an sbatch script: each check returns the
value, or refuses it with a one-line UserError naming the option.

Values reach the job script in two places:
- `#SBATCH --name=value` lines. sbatch reads them with its own tokenizer (_get_argument
  in Slurm's src/sbatch/opt.c): whitespace separates arguments, quotes and backslashes
  are consumed, an unquoted `#` starts a comment, "packjob"/"hetjob" anywhere in the line
  splits the job into heterogeneous components, and directives end at the first line
  that is not a comment. So a newline would start a command (and hide every later
  #SBATCH line), a space would add another sbatch option. Directive values are kept to
  a plain ASCII set, and options with a Slurm grammar must match it.
- `export IMNET64_X=value` lines: shlex.quote makes any text one literal word for bash,
  and the templates only ever use these values quoted or split into words by `read -r -a`.
No value may hold a control character (C0, DEL, C1), a Unicode line or paragraph
separator, or a bidirectional-text control (which makes a script read differently from
what runs), wherever it goes.

The scripts themselves are rendered and submitted by imnet64.cluster.slurm_submit.
"""

from __future__ import annotations

import re
import unicodedata

from imnet64.cluster import job_consistency
from imnet64.errors import UserError

_CHAR_NAMES = {"\n": "newline", "\r": "carriage return", "\t": "tab", "\0": "NUL",
               "\x1b": "escape", "\x7f": "delete", "\x85": "next line"}
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")
# Characters a directive value may hold: none that sbatch's tokenizer treats specially
# (space, quotes, backslash, #) and none of the shell's ($ ` ;), though no shell reads it.
_DIRECTIVE_CHARS = re.compile(r"[A-Za-z0-9_.,:=@%+/~^&|!*?()\[\]{}<>-]")
_DIRECTIVE_ALLOWED = "letters, digits and _.,:=@%+/~^&|!*?()[]{}<>-"
_HETJOB = re.compile("packjob|hetjob", re.IGNORECASE)
_SBATCH_OPTION = re.compile(r"--[A-Za-z][A-Za-z0-9-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = r"[A-Za-z0-9_.-]+"
_TIME = re.compile(r"[0-9]+(?::[0-9]+){0,2}|[0-9]+-[0-9]+(?::[0-9]+){0,2}|UNLIMITED|INFINITE",
                   re.IGNORECASE)
TIME_FORMATS = ("minutes, minutes:seconds, hours:minutes:seconds, days-hours, "
                "days-hours:minutes, days-hours:minutes:seconds, or UNLIMITED")


def _describe(char: str) -> str:
    name = _CHAR_NAMES.get(char) or unicodedata.name(char, "").lower()
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS


def check_text(option: str, value: str) -> str:
    """`value` unless it holds a control character (any option, any destination)."""
    for char in value:
        if _is_control(char):
            kind = "control character" if unicodedata.category(char) == "Cc" else "character"
            raise UserError(f"{option} {value!r}: {kind} {_describe(char)} is not allowed")
    return value


def check_directive(option: str, value: str) -> str:
    """`value` if it can stand in an `#SBATCH --name=value` line as exactly one argument."""
    check_text(option, value)
    for char in value:
        if _DIRECTIVE_CHARS.fullmatch(char):
            continue
        if char.isspace():
            why = f"whitespace {_describe(char)} would split it into more sbatch options"
        elif char in "'\"\\":
            why = f"sbatch reads {char!r} in an #SBATCH line as quoting"
        elif char == "#":
            why = "sbatch reads '#' in an #SBATCH line as the start of a comment"
        else:
            why = f"{char!r} is not allowed in an #SBATCH line (allowed: {_DIRECTIVE_ALLOWED})"
        raise UserError(f"{option} {value!r}: {why}")
    found = _HETJOB.search(value)
    if found:
        raise UserError(f"{option} {value!r}: sbatch reads {found.group(0)!r} in an #SBATCH "
                        "line as a heterogeneous-job separator")
    return value


def _check_grammar(option: str, value: str, pattern: str | re.Pattern, what: str) -> str:
    check_directive(option, value)
    if not re.fullmatch(pattern, value):
        raise UserError(f"{option} {value!r}: {what}")
    return value


def check_time(option: str, value: str) -> str:
    """A Slurm time limit as sbatch(1) --time takes it."""
    return _check_grammar(option, value, _TIME, f"not a Slurm time limit ({TIME_FORMATS})")


def check_partition(option: str, value: str) -> str:
    return _check_grammar(option, value, rf"{_NAME}(?:,{_NAME})*",
                          "partition names are letters, digits and _.- (a list: comma-"
                          "separated)")


def check_name(option: str, value: str) -> str:
    """An account or QOS name."""
    return _check_grammar(option, value, _NAME, "expected one name of letters, digits and _.-")


def check_job_name(option: str, value: str) -> str:
    # no "/": the name becomes part of the log file name (%x)
    return _check_grammar(option, value, r"[A-Za-z0-9_.+,:@=-]+",
                          "job names are letters, digits and _.+,:@=- here")


def check_signal_spec(option: str, value: str) -> str:
    """sbatch --signal: [{R|B}:]<sig_num|name>[@sig_time], of a signal that can be caught."""
    _check_grammar(option, value,
                   re.compile(r"(?:[RB]{1,2}:)?(?:[0-9]+|(?:SIG)?[A-Z][A-Z0-9]*)"
                              r"(?:@[0-9]+)?", re.IGNORECASE),
                   "expected [B:]SIGNAL[@SECONDS], e.g. B:USR1@120")
    sig = job_consistency.signal_spec_signal(value)
    if sig is not None:
        from imnet64.cluster.preemption import check_catchable

        try:
            check_catchable(sig)
        except UserError as e:
            raise UserError(f"{option} {value!r}: {e}") from None
    return value


# sbatch options whose values have a grammar of their own (also via --sbatch-arg)
SBATCH_GRAMMARS = {"--partition": check_partition, "--account": check_name,
                    "--qos": check_name, "--time": check_time, "--time-min": check_time,
                    "--job-name": check_job_name, "--signal": check_signal_spec}


def parse_count(option: str, text: str) -> int:
    """An option's whole number, from the command line's text (ASCII digits only)."""
    check_text(option, text)
    if not re.fullmatch(r"[0-9]+", text):
        raise UserError(f"{option} {text!r}: expected a whole number (e.g. 4)")
    return int(text)


def check_count(option: str, value: object, minimum: int = 0) -> int:
    """`value` if it is a whole number (an int, not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{option} {value!r}: expected a whole number (e.g. 4)")
    if value < minimum:
        raise UserError(f"{option} must be at least {minimum} (got {value})")
    return value


def parse_sbatch_arg(arg: str, option: str = "--sbatch-arg") -> tuple[str, str]:
    """"--name=value" or "--flag" -> (name, value), checked like the options imnet64 sets."""
    check_text(option, arg)
    name, sep, value = arg.partition("=")
    if not _SBATCH_OPTION.fullmatch(name):
        raise UserError(f"{option} {arg!r}: takes long sbatch options like --qos=high, named "
                        "with letters, digits and -")
    if sep and not value:
        raise UserError(f"{option} {arg!r}: empty value (for a flag, leave out the =)")
    if _HETJOB.search(name):
        raise UserError(f"{option} {arg!r}: sbatch reads {_HETJOB.search(name).group(0)!r} in "
                        "an #SBATCH line as a heterogeneous-job separator")
    if value:
        check = SBATCH_GRAMMARS.get(name, check_directive)
        try:
            check(option, value)
        except UserError as e:
            # name the whole argument, not only its value
            raise UserError(str(e).replace(f"{option} {value!r}", f"{option} {arg!r}", 1)) \
                from None
    return name, value


def check_settings(sbatch: dict[str, str | None], env: dict[str, str]) -> None:
    """The #SBATCH options and exported settings a script is rendered with, checked again
    whoever built them (slurm_submit.render calls this: defence in depth)."""
    for name, value in sbatch.items():
        if not _SBATCH_OPTION.fullmatch(name) or _HETJOB.search(name):
            raise UserError(f"sbatch option {name!r}: expected --name of letters, digits and -")
        if value:
            check_directive(name, value)
    for key, value in env.items():
        if not _ENV_NAME.fullmatch(key):
            raise UserError(f"setting {key!r}: not a variable name")
        check_text(key, str(value))
