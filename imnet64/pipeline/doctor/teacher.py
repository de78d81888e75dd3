"""Doctor's teacher section: the teacher `imnet64 label` would load (resolved as
teacher.loading does), whether it is here (offline build, TF Hub cache, SavedModel folder),
and a problem when a job could not get it. Nothing is downloaded: an uncached TF Hub teacher's
host gets a NETWORK_TIMEOUT_S TCP connect."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from imnet64.cluster.environment import Environment
from imnet64.pipeline.doctor.report import TeacherCheck

NETWORK_TIMEOUT_S = 3.0


def tfhub_cache_dir(env: Mapping[str, str] | Environment) -> Path:
    """TF Hub's cache without importing it: $TFHUB_CACHE_DIR, else <tmp>/tfhub_modules
    (tensorflow_hub.resolver.tfhub_cache_dir(use_temp=True), which imnet64 uses)."""
    environment = env if isinstance(env, Environment) else Environment.read(env)
    return Path(environment.tfhub_cache_dir or Path(tempfile.gettempdir()) / "tfhub_modules")


def _reachable(host: str, port: int, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """A TCP connect within `timeout` (name lookup included: it runs in a thread)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _writable_folder(folder: Path) -> bool:
    for p in (folder, *folder.parents):
        if p.exists():
            return p.is_dir() and os.access(p, os.W_OK | os.X_OK)
    return False


def _teacher_check(spec: str, kind: str, path: Path, cache_dir: str | None,
                   present: bool) -> TeacherCheck:
    from imnet64.teacher.fingerprint import teacher_sha256

    return TeacherCheck(spec, kind, str(path), cache_dir, present,
                        teacher_sha256(path) if present else None)


def _check_offline_teacher(environment: Environment) -> tuple[TeacherCheck, list[str]]:
    from imnet64.teacher import offline
    from imnet64.teacher.loading import OFFLINE_SPEC

    home = environment.home
    path = offline.offline_teacher_dir(home)
    check = _teacher_check(OFFLINE_SPEC, "offline", path, str(home),
                           offline.is_current_build(path))
    if check.present:
        return check, []
    try:
        offline.default_weights_path()
    except Exception as e:  # noqa: BLE001  (UserError: the package is missing)
        return check, [f"teacher offline: not built in {path} and cannot be: {e}"]
    if not _writable_folder(path.parent):
        return check, [f"teacher offline: not built in {path}, and IMNET64_HOME ({home}) is "
                       "not writable here: build it where it is (imnet64 teacher build) or "
                       "point IMNET64_HOME at a writable folder"]
    check.note = f"built on first use (~10 s, no network) into {path}"
    return check, []


def _check_hub_teacher(spec: str, environment: Environment, network: bool
                       ) -> tuple[TeacherCheck, list[str]]:
    from imnet64.teacher import hub as hub_cache

    cache = tfhub_cache_dir(environment)
    check = _teacher_check(spec, "tfhub", hub_cache.cached_module_dir(spec, cache), str(cache),
                           hub_cache.is_cached(spec, cache))
    if check.present:
        return check, []
    host = urlparse(spec).hostname or "tfhub.dev"
    if network and _reachable(host, 443):
        check.note = f"not cached: would be downloaded from {host} into {cache}"
        return check, []
    return check, [f"teacher {spec} is not in the TF Hub cache {cache} and {host} cannot be "
                   f"reached from here: a label job would fail; {hub_cache.fetch_hint(spec)}"]


def _check_folder_teacher(spec: str) -> tuple[TeacherCheck, list[str]]:
    path = Path(spec).expanduser().absolute()
    present = (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()
    check = _teacher_check(spec, "folder", path, None, present)
    if present:
        return check, []
    return check, [f"teacher {spec}: {path} is not a SavedModel folder (no saved_model.pb) "
                   "here: is it on a file system this node mounts?"]


def check_teacher(spec: str | None, env: Mapping[str, str] | Environment, network: bool = True
                  ) -> tuple[TeacherCheck, list[str]]:
    """The teacher `imnet64 label` would load (same resolution as teacher.loading), whether
    it is here, and a problem if a job could not get it."""
    from imnet64.teacher import hub as hub_cache
    from imnet64.teacher.loading import DEFAULT_HANDLE, OFFLINE_SPEC

    environment = env if isinstance(env, Environment) else Environment.read(env)
    spec = str(spec or "").strip() or environment.teacher or DEFAULT_HANDLE
    if spec == OFFLINE_SPEC:
        return _check_offline_teacher(environment)
    if hub_cache.is_url_handle(spec):
        return _check_hub_teacher(spec, environment, network)
    return _check_folder_teacher(spec)
