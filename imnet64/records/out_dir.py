"""What OUT_DIR of `imnet64 shard-records` holds, and whether this run may write there.

OUT_DIR may hold only what this dataset resumes from. Another dataset there (another
source or options), or files imnet64 did not write, are refused before anything is written
unless `force`; even then only files imnet64 recorded writing (shards listed by the old
dataset.json or by a .shards/ sidecar, their sidecars, dataset.json) are removed (see
out_dir_cleanup), and a file no record covers is never overwritten. Only imnet64's own
records (dataset.json, .shards/ sidecars) make a file imnet64's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imnet64 import atomic
from imnet64.cluster import folder_lock
from imnet64.errors import UserError
from imnet64.formats.manifest import FORMAT, MANIFEST_NAME, RUN_SIDECAR, ShardInfo
from imnet64.formats.shard_check import check_shard
from imnet64.formats.shard_sidecar import SIDECAR_DIR
from imnet64.records.options import ShardOptions
from imnet64.records.source import labels_dir

SHARD_NAME_RE = re.compile(r"^(train|val)-\d{5}-of-\d{5}\.tfrecord$")


def manifest_is_current(out_dir: Path, fingerprint: str, options: ShardOptions) -> dict | None:
    """OUT_DIR's manifest if it is of this very dataset (SOURCE fingerprint and options)
    and every shard it lists is there: then there is nothing to do."""
    path = out_dir / MANIFEST_NAME
    try:
        raw = atomic.read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or not _same_dataset(raw, fingerprint, options):
        return None
    return raw if _shards_as_listed(out_dir, raw) else None


def _shards_as_listed(out_dir: Path, manifest: dict[str, Any]) -> bool:
    """Every shard file the manifest lists is there, of the size it lists."""
    try:
        return all(check_shard(out_dir, _listed(shard), "size").ok
                   for split in manifest["splits"].values() for shard in split["shards"])
    except (KeyError, TypeError):
        return False


def _listed(shard: Any) -> ShardInfo:
    """A raw manifest entry as a ShardInfo (KeyError or TypeError if it is not one); only
    its file and bytes are needed for a size check."""
    return ShardInfo(shard["file"], shard.get("examples"), shard["bytes"], shard.get("sha256"))


@dataclass
class OutDirState:
    """What OUT_DIR holds before a run, sorted by who wrote it. Only imnet64's own records
    (dataset.json, .shards/ sidecars) make a file imnet64's."""

    manifest: dict[str, Any] | None = None  # an imnet64 manifest
    foreign_manifest: bool = False  # a dataset.json that is not one
    has_sidecar_dir: bool = False
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)  # shard file -> sidecar
    shard_named: list[str] = field(default_factory=list)  # files named like our shards
    foreign: list[str] = field(default_factory=list)  # anything else imnet64 did not write

    @property
    def is_dataset_folder(self) -> bool:
        """A folder shard-records has written into (and files named like shards are its)."""
        return self.manifest is not None or self.has_sidecar_dir

    def recorded(self) -> dict[str, int | None]:
        """Shard files a record says imnet64 wrote -> their recorded size."""
        files: dict[str, int | None] = {}
        for split in (self.manifest or {}).get("splits", {}).values():
            for shard in split.get("shards", []):
                files[shard["file"]] = shard.get("bytes")
        for name, sidecar in self.sidecars.items():
            files.setdefault(name, sidecar.get("bytes"))
        return files


def _read_manifest_file(path: Path) -> dict[str, Any] | None:
    try:
        raw = atomic.read_json(path)
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) and raw.get("format") == FORMAT else None


def read_sidecars(folder: Path) -> dict[str, dict[str, Any]]:
    """The readable sidecars in `folder` (.shards/), by the shard file each names."""
    sidecars = {}
    for path in sorted(folder.iterdir()):
        shard = path.name[: -len(".json")] if path.name.endswith(".json") else ""
        if not SHARD_NAME_RE.match(shard):
            continue
        try:
            sidecar = atomic.read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(sidecar, dict) and sidecar.get("file") == shard:
            sidecars[shard] = sidecar
    return sidecars


def is_own_temp(name: str, sidecar: bool = False) -> bool:
    """A temporary atomic.py names after a file shard-records writes."""
    target = atomic.temp_target(name)
    if target is None:
        return False
    if sidecar:
        return target.endswith(".json") and bool(SHARD_NAME_RE.match(target[: -len(".json")]))
    return target in (MANIFEST_NAME, RUN_SIDECAR) or bool(SHARD_NAME_RE.match(target))


def read_out_dir(out_dir: Path) -> OutDirState:
    """Sort what OUT_DIR holds by who wrote it (nothing is changed)."""
    state = OutDirState()
    if not out_dir.is_dir():
        return state
    for path in sorted(out_dir.iterdir()):
        name = path.name
        if name == MANIFEST_NAME:
            state.manifest = _read_manifest_file(path) if path.is_file() else None
            state.foreign_manifest = state.manifest is None
        elif name == RUN_SIDECAR and path.is_file():
            pass  # dataset.json's sidecar: ours when dataset.json is
        elif name == SIDECAR_DIR and path.is_dir():
            state.has_sidecar_dir = True
            state.sidecars = read_sidecars(path)
        elif SHARD_NAME_RE.match(name) and path.is_file():
            state.shard_named.append(name)
        elif not is_own_temp(name) and not folder_lock.is_lock_file(name):
            state.foreign.append(name)
    return state


def first_names(names: list[str], limit: int = 3) -> str:
    """`a, b, c and 2 more`: file names for a one-line message."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _recorded_options(manifest: dict[str, Any]) -> Any:
    """The manifest's options; those written before --labels existed were teacher labels."""
    old = manifest.get("options")
    return {"labels": "teacher", **old} if isinstance(old, dict) else old


def _same_dataset(manifest: dict[str, Any], fingerprint: str, options: ShardOptions) -> bool:
    try:
        return (_recorded_options(manifest) == options.as_json()
                and manifest["source_info"]["fingerprint"] == fingerprint)
    except (KeyError, TypeError):
        return False


def _describe_manifest(manifest: dict[str, Any], options: ShardOptions) -> str:
    """One line on the dataset a manifest describes and how it differs from this run."""
    try:
        splits = manifest["splits"].values()
        examples = sum(s["count"] for s in splits)
        shards = sum(len(s["shards"]) for s in splits)
        what = f"{examples} examples in {shards} shard(s) from {manifest.get('source')}"
    except (KeyError, TypeError, AttributeError):
        what = "unreadable details"
    old = _recorded_options(manifest) if isinstance(manifest.get("options"), dict) else {}
    new = options.as_json()
    changed = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    diff = ("options differ: " + ", ".join(changed)) if changed else "SOURCE has changed since"
    return f"{what}; {diff}"


def check_before_writing(
    out_dir: Path, state: OutDirState, fingerprint: str, options: ShardOptions, force: bool
) -> None:
    """Refuse what writing into OUT_DIR would replace without asking (before any scan)."""
    sidecar_dir = out_dir / SIDECAR_DIR
    if sidecar_dir.exists() and not sidecar_dir.is_dir():
        raise UserError(f"OUT_DIR {out_dir} holds a file {SIDECAR_DIR}, where imnet64 keeps "
                        "its records: move it away or choose another folder")
    if state.foreign_manifest:
        raise UserError(
            f"OUT_DIR {out_dir} holds a {MANIFEST_NAME} that is not an imnet64 manifest; "
            "imnet64 will not replace it: move it away or choose another folder"
        )
    if force:
        return
    if state.manifest is not None and not _same_dataset(state.manifest, fingerprint, options):
        raise UserError(
            f"OUT_DIR {out_dir} holds another dataset ({MANIFEST_NAME}: "
            f"{_describe_manifest(state.manifest, options)}); pass --force to replace it "
            "(only its shards and manifest are removed) or choose another folder"
        )
    if not state.is_dataset_folder and (state.foreign or state.shard_named):
        names = sorted(state.foreign + state.shard_named)
        raise UserError(
            f"OUT_DIR {out_dir} is not empty and holds files imnet64 did not write "
            f"({first_names(names)}); choose an empty or new folder, or pass --force to write "
            "beside them (they are kept)"
        )


def check_plan_against(
    out_dir: Path, state: OutDirState, hashes: dict[str, str], force: bool
) -> None:
    """Refuse a partly written dataset of another plan (unless `force`), and, always, a plan
    that would overwrite a file no record says imnet64 wrote."""
    if state.manifest is None and state.sidecars and not force:
        resumes = any(hashes.get(f) == s.get("plan") for f, s in state.sidecars.items())
        if not resumes:
            raise UserError(
                f"OUT_DIR {out_dir} holds a partly written dataset made from another SOURCE "
                f"or with other options ({len(state.sidecars)} shard(s) recorded in "
                f"{SIDECAR_DIR}/, no {MANIFEST_NAME}); pass --force to replace it or choose "
                "another folder"
            )
    if not state.is_dataset_folder:
        clash = sorted(set(state.shard_named) & set(hashes))
        if clash:
            raise UserError(
                f"OUT_DIR {out_dir} holds {first_names(clash)}, which this run would write, and no "
                "record says imnet64 wrote it: imnet64 will not replace it; move it away or "
                "choose another folder"
            )


def check_out_dir(source: Path, out_dir: Path) -> None:
    """OUT_DIR must not land inside what is read: a class-folder tree would then hold
    our shards as a "class" on the next run; a labels/ folder holds only label parts."""
    protected = (labels_dir(source) or source).resolve()
    out = out_dir.resolve()
    if out == protected or protected in out.parents:
        raise UserError(f"OUT_DIR {out_dir} must not be inside SOURCE {protected}")
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT_DIR {out_dir} exists and is not a folder")


def claim_out_dir(out_dir: Path, state: OutDirState) -> None:
    """Mark OUT_DIR as this dataset's before its first shard is written."""
    # .shards/ first: it marks the folder as shard-records' even before a shard is done
    (out_dir / SIDECAR_DIR).mkdir(parents=True, exist_ok=True)
    # an older manifest describes other shards: it must not outlive their replacement
    if state.manifest is not None:
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        (out_dir / RUN_SIDECAR).unlink(missing_ok=True)
