"""Reading back what imnet64 wrote: parse a JSON file and check it against its writer's typed
contract (a dataclass or a type hint), or name what is wrong in one line.

Every reader of a file imnet64 wrote (run folder, dataset, label parts) goes through here, so a
file that was truncated, edited or replaced gives `error: <file>: <what is wrong>` (a
UserError: exit 2) and never a traceback from deep inside the code that trusted it. Nothing
is changed on the way: a reader that fails leaves every file as it was. `rebuild` says, for
files that can be made again, how (never done here: the user's file is theirs).

The contract is the writer's own dataclass: its fields' type hints are what is checked
(`int` is not a bool, `float` takes an int, `X | None`, `tuple[X, ...]`, `list[X]`,
`dict[str, X]`, nested dataclasses; fields with a default may be absent, unknown keys are
allowed so that newer writers stay readable).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imnet64.errors import UserError


class Mismatch(ValueError):
    """A value that does not fit the contract; the message says where and why."""


def _what(value: Any) -> str:
    """A short description of a JSON value for a message."""
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    text = json.dumps(value, ensure_ascii=False)
    return f"{kind} ({text[:40]}{'...' if len(text) > 40 else ''})"


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          type(None): "null", dict: "an object", list: "a list"}


def _expected(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(hint))
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        return "a list"
    if origin in (dict, Mapping) or hint in (dict, Mapping) or dataclasses.is_dataclass(hint):
        return "an object"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def check(value: Any, hint: Any, where: str = "", null_float: bool = False) -> None:
    """Raise Mismatch if `value` (parsed JSON) does not fit `hint`. `null_float`: null
    stands for a non-finite float (JSON has no NaN: imnet64.train.history writes null)."""
    if hint is Any:
        return
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        problems = []
        for option in typing.get_args(hint):
            try:
                check(value, option, where, null_float)
                return
            except Mismatch as e:
                problems.append(e)
        # one option fits the kind of value: its (deeper) problem says more
        deeper = [p for p in problems if not str(p).endswith(f"not {_what(value)}")]
        if len(deeper) == 1:
            raise deeper[0]
        raise Mismatch(f"{where or 'it'} should be {_expected(hint)}, not {_what(value)}")
    if dataclasses.is_dataclass(hint):
        check_fields(value, hint, where, null_float)
        return
    if hint is float and value is None and null_float:
        return
    if hint in (int, float, str, bool, type(None)):
        ok = (value is None if hint is type(None)
              else isinstance(value, bool) if hint is bool
              else isinstance(value, hint) and not isinstance(value, bool) if hint is int
              else isinstance(value, (int, float)) and not isinstance(value, bool)
              if hint is float else isinstance(value, str))
        if not ok:
            raise Mismatch(f"{where or 'it'} should be {_expected(hint)}, "
                           f"not {_what(value)}")
        return
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, list):
            raise Mismatch(f"{where or 'it'} should be a list, not {_what(value)}")
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if args:
            for i, item in enumerate(value):
                check(item, args[0], _join(where, i), null_float)
        return
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, dict):
            raise Mismatch(f"{where or 'it'} should be an object, not {_what(value)}")
        args = typing.get_args(hint)
        if len(args) == 2:
            for key, item in value.items():
                check(item, args[1], _join(where, key), null_float)
        return
    raise TypeError(f"read_back.check cannot check {hint!r}")  # a programming error


def check_fields(value: Any, cls: type, where: str = "", null_float: bool = False) -> None:
    """`value` is an object with `cls`'s fields (those without a default are required)."""
    if not isinstance(value, dict):
        raise Mismatch(f"{where or 'it'} should be an object, not {_what(value)}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
        if f.name not in value:
            if required:
                raise Mismatch(f"{_join(where, f.name)} is missing")
            continue
        check(value[f.name], hints[f.name], _join(where, f.name), null_float)


def build(cls: type, value: Any, where: str = "", null_float: bool = False) -> Any:
    """An instance of the dataclass `cls` from checked JSON (nested dataclasses and tuples
    built too; unknown keys dropped)."""
    check_fields(value, cls, where, null_float)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.init and f.name in value:
            kwargs[f.name] = _convert(value[f.name], hints[f.name])
    return cls(**kwargs)


def _convert(value: Any, hint: Any) -> Any:
    if value is None:
        return math.nan if hint is float else None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                check(value, option)
            except Mismatch:
                continue
            return _convert(value, option)
    if dataclasses.is_dataclass(hint):
        return build(hint, value)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        items = [_convert(v, args[0]) if args else v for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) and len(typing.get_args(hint)) == 2:
        return {k: _convert(v, typing.get_args(hint)[1]) for k, v in value.items()}
    if hint is float:
        return float(value)
    return value


# ---- files ---------------------------------------------------------------------------------


def _then(rebuild: str | None) -> str:
    return f"; {rebuild}" if rebuild else ""


def require_folder(path: str | Path, what: str = "a folder") -> None:
    """UserError if `path` exists but is not a folder (a plain file where imnet64 keeps a
    folder: it would fail later, deep inside a writer)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} should be {what} but is a file: move it away (imnet64 "
                        "keeps a folder there)")


def require_file_or_absent(path: str | Path) -> None:
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UserError(f"{path} should be a file but is a folder: move it away (imnet64 "
                        "writes a file there)")


def read_json(path: str | Path, rebuild: str | None = None) -> Any:
    """Parse `path` as JSON; one-line UserError if it is a folder, unreadable, not UTF-8 or
    not JSON."""
    path = Path(path)
    require_file_or_absent(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} is missing{_then(rebuild)}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is damaged: not UTF-8 text (byte {e.start}){_then(rebuild)}"
                        ) from e
    if not text.strip():
        raise UserError(f"{path} is damaged: it is empty{_then(rebuild)}")
    try:
        return json.loads(text)
    except ValueError as e:
        raise UserError(f"{path} is damaged: not valid JSON ({_first_line(e)})"
                        f"{_then(rebuild)}") from e


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def read_checked(path: str | Path, hint: Any, rebuild: str | None = None) -> Any:
    """read_json, then `check` against `hint` (a dataclass or a type hint); the parsed JSON."""
    data = read_json(path, rebuild)
    try:
        check(data, hint)
    except Mismatch as e:
        raise UserError(f"{path} is damaged: {e}{_then(rebuild)}") from None
    return data


def read_dataclass(path: str | Path, cls: type, rebuild: str | None = None) -> Any:
    """read_json, then an instance of the dataclass `cls` (checked field by field)."""
    data = read_json(path, rebuild)
    try:
        return build(cls, data)
    except Mismatch as e:
        raise UserError(f"{path} is damaged: {e}{_then(rebuild)}") from None


def damaged(path: str | Path, problem: str, rebuild: str | None = None) -> UserError:
    """The one-line error for a file whose content breaks a rule types cannot state."""
    return UserError(f"{path} is damaged: {problem}{_then(rebuild)}")
