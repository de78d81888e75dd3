"""What `imnet64 shard-records` removes from OUT_DIR, and only that: shard files of older
plans that a record says imnet64 wrote (at their recorded size) and their sidecars, and the
temporaries a killed run left (atomic.py's names, for shard, sidecar and manifest names
only).
"""

from __future__ import annotations

from pathlib import Path

from imnet64 import atomic
from imnet64.formats.manifest import MANIFEST_NAME, RUN_SIDECAR
from imnet64.formats.shard_sidecar import SIDECAR_DIR
from imnet64.records.out_dir import SHARD_NAME_RE, is_own_temp, read_sidecars


def remove_stale_outputs(
    out_dir: Path, keep: set[str], recorded: dict[str, int | None]
) -> list[str]:
    """Shard files of earlier plans that a record (old manifest, sidecar) says imnet64
    wrote, if their size is still the recorded one, and their sidecars. Returns the shard
    files kept because no record covers them or their size changed."""
    sidecars = read_sidecars(out_dir / SIDECAR_DIR) if (out_dir / SIDECAR_DIR).is_dir() else {}
    recorded = {**{f: s.get("bytes") for f, s in sidecars.items()}, **recorded}
    kept = []
    for path in sorted(out_dir.iterdir()):
        name = path.name
        if not SHARD_NAME_RE.match(name) or name in keep or not path.is_file():
            continue
        size = recorded.get(name, -1)
        if name in recorded and (size is None or path.stat().st_size == size):
            path.unlink(missing_ok=True)
        else:
            kept.append(name)
    for name in sidecars:
        if name not in keep and not (out_dir / name).exists():
            (out_dir / SIDECAR_DIR / f"{name}.json").unlink(missing_ok=True)
    return kept


def remove_temps(
    out_dir: Path, shards: set[str] | None, manifest_older_than: float | None = None
) -> int:
    """Temporaries a killed run left: of the shard files `shards` (None: any) and their
    sidecars, and, with `manifest_older_than`, dataset.json's that are older than that
    (a newer one may be another rank's write in progress). Returns how many went."""
    removed = 0
    for folder, sidecar in ((out_dir, False), (out_dir / SIDECAR_DIR, True)):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if _is_leftover_temp(path, sidecar, shards, manifest_older_than):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _is_leftover_temp(path: Path, sidecar: bool, shards: set[str] | None,
                      manifest_older_than: float | None) -> bool:
    """Whether `path` is a temporary `remove_temps` is asked to remove (see there)."""
    if not is_own_temp(path.name, sidecar) or not path.is_file():
        return False
    target = atomic.temp_target(path.name) or ""
    if target in (MANIFEST_NAME, RUN_SIDECAR):
        return manifest_older_than is not None and path.stat().st_mtime < manifest_older_than
    return shards is None or target.removesuffix(".json") in shards
