"""The sha256 of a teacher's weights, which every output's provenance records.

- the offline teacher (imnet64_teacher.json beside saved_model.pb): the sha256 of
  torchvision's .pth weights it was converted from (checked when it was built);
- any other SavedModel (TF Hub module, your own folder): a sha256 over its saved_model.pb
  and variables/ files (each file's relative path and sha256), cached on disk under
  $IMNET64_HOME so a multi-GB model is hashed once, not by every array task.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from imnet64 import atomic
from imnet64.teacher.offline import METADATA_FILE, imnet64_home


def _saved_model_files(folder: Path) -> list[Path]:
    files = [folder / n for n in ("saved_model.pb", "saved_model.pbtxt") if (folder / n).is_file()]
    variables = folder / "variables"
    if variables.is_dir():
        files += sorted(p for p in variables.rglob("*") if p.is_file())
    return files


def _hash_cache_path(folder: Path) -> Path:
    key = hashlib.sha1(str(folder).encode("utf-8", "surrogateescape")).hexdigest()
    return imnet64_home() / "cache" / "teacher-sha256" / f"{key}.json"


def _cached_sha256(cache: Path, folder: Path, signature: str) -> str | None:
    try:
        cached = atomic.read_json(cache)
        if cached.get("folder") == str(folder) and cached.get("signature") == signature:
            return str(cached["sha256"])
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    return None


@lru_cache(maxsize=16)
def _saved_model_sha256(folder: Path, signature: str) -> str:
    """sha256 over each file's relative path and sha256, cached on disk by `signature`
    (the files' names, sizes and mtimes)."""
    cache = _hash_cache_path(folder)
    cached = _cached_sha256(cache, folder, signature)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for path in _saved_model_files(folder):
        rel = path.relative_to(folder).as_posix()
        digest.update(f"{rel}\0{atomic.sha256_file(path)}\n".encode("utf-8", "surrogateescape"))
    value = digest.hexdigest()
    try:  # a read-only IMNET64_HOME only costs the hash again next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(cache, {"folder": str(folder), "signature": signature, "sha256": value})
    except OSError:
        pass
    return value


def _offline_weights_sha256(folder: Path) -> str | None:
    try:
        meta = atomic.read_json(folder / METADATA_FILE)
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and isinstance(meta.get("weights_sha256"), str):
        return meta["weights_sha256"]
    return None


def teacher_sha256(folder: str | os.PathLike | None) -> str | None:
    """The sha256 of the weights of the teacher in SavedModel `folder` (see the module's
    docstring for which files); None when there is no such folder."""
    if folder is None:
        return None
    folder = Path(folder).absolute()
    offline = _offline_weights_sha256(folder)
    if offline is not None:
        return offline
    files = _saved_model_files(folder)
    if not files:
        return None
    try:
        stats = [(p.relative_to(folder).as_posix(), p.stat()) for p in files]
        signature = hashlib.sha256(json.dumps(
            [(rel, st.st_size, st.st_mtime_ns) for rel, st in stats]).encode()).hexdigest()
        return _saved_model_sha256(folder, signature)
    except OSError:
        return None
