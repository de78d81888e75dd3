"""The dataset manifest (`DATASET_DIR/dataset.json`): what training trusts instead of a glob.

Written by `imnet64 shard-records` (last, atomically); read by training, evaluation,
`inspect` and the demo. Format version 1:

{
  "format": "imnet64-dataset", "version": 1,
  "encoding": "png" | "raw",
  "image_size": 64,
  "classes": [{"id": 0, "name": "tabby", "teacher_id": 282}, ...],
  "splits": {
    "train": {"count": N, "class_counts": [n_0, ..., n_{C-1}],
              "shards": [{"file": "train-00000-of-00002.tfrecord", "examples": n,
                          "bytes": b, "sha256": "..."}, ...]},
    "val": {...}
  },
  "teacher": "...",            # the teacher that made the labels
  "source": "...",             # what shard-records read
  "options": {...},            # the options that made it
  "provenance": {...}          # code and teacher (imnet64.formats.provenance.STABLE_FIELDS)
}

dataset.json is the same bytes for any --num-workers or number of ranks, so where it was
written (host, Slurm ids: provenance.RUN_FIELDS) goes to `dataset.run.json` beside it, tied
to it by its sha256; `dataset_provenance` joins the two.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imnet64 import atomic
from imnet64.atomic import sha256_file
from imnet64.errors import UserError
from imnet64.formats import image64, provenance, read_back
from imnet64.formats.shard_check import check_shard

MANIFEST_NAME = "dataset.json"
FORMAT = "imnet64-dataset"
VERSION = 1
RUN_SIDECAR = "dataset.run.json"  # where dataset.json was written (provenance.RUN_FIELDS)
RUN_FORMAT = "imnet64.dataset-run/1"


@dataclass(frozen=True)
class ShardInfo:
    file: str
    examples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SplitInfo:
    count: int
    class_counts: tuple[int, ...]
    shards: tuple[ShardInfo, ...]


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    teacher_id: int | None = None  # absent in manifests written before it was recorded


@dataclass(frozen=True)
class Manifest:
    root: Path
    encoding: str
    image_size: int
    classes: tuple[ClassInfo, ...]
    splits: dict[str, SplitInfo]
    teacher: str | None
    raw: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            have = sorted(self.splits)
            raise UserError(f"dataset {self.root} has no split {name!r} (has {have})")
        return self.splits[name]

    def shard_paths(self, split: str) -> list[Path]:
        return [self.root / s.file for s in self.split(split).shards]

    @property
    def fingerprint(self) -> str:
        """The dataset's identity, wherever it lies: a sha256 over its class names and each
        split's shard sha256s. A copy or a move keeps it; other examples change it."""
        payload = {"classes": self.class_names,
                   "splits": {name: [s.sha256 for s in info.shards]
                              for name, info in sorted(self.splits.items())}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def shard_size_problems(self, splits: list[str] | None = None) -> list[str]:
        """Shards that are missing or whose size differs from the manifest's (a cheap check:
        one stat per file). One line per problem."""
        problems = []
        for name in splits if splits is not None else list(self.splits):
            if name not in self.splits:
                continue
            for shard in self.splits[name].shards:
                found = check_shard(self.root, shard, "size")
                if found.error is not None:
                    problems.append(f"shard {found.path} cannot be read ({found.why_unreadable})")
                elif not found.size_ok:
                    problems.append(f"shard {found.path} has {found.size} bytes, its manifest "
                                    f"says {shard.bytes} (truncated or replaced)")
        return problems

    def damaged_shards(self, split: str, files: list[Path] | None = None) -> list[str]:
        """Shards of `split` (or just `files` of it) whose size or sha256 differs from the
        manifest's (reads every byte of them). One line per damaged shard."""
        wanted = None if files is None else {Path(f).name for f in files}
        problems = []
        for shard in self.split(split).shards:
            if wanted is not None and shard.file not in wanted:
                continue
            found = check_shard(self.root, shard, "sha256")
            if found.error is not None:
                problems.append(f"shard {found.path} cannot be read ({found.why_unreadable})")
            elif not found.sha256_ok:
                problems.append(f"shard {found.path} is damaged (its sha256 differs from the "
                                "manifest's)")
        return problems


@dataclass(frozen=True)
class ManifestContract:
    """What dataset.json must hold for a reader (write_manifest writes it; `load_manifest`
    checks every read against it, see imnet64.formats.read_back)."""

    format: str
    version: int
    encoding: str
    classes: tuple[ClassInfo, ...]
    splits: dict[str, SplitInfo]
    image_size: int = image64.SIZE
    teacher: str | None = None


def manifest_path(dataset_dir: str | Path) -> Path:
    return Path(dataset_dir) / MANIFEST_NAME


def write_manifest(
    dataset_dir: str | Path,
    *,
    encoding: str,
    classes: Sequence[ClassInfo],
    splits: Mapping[str, SplitInfo],
    teacher: str | None,
    source: str,
    options: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `DATASET_DIR/dataset.json` (atomically, stable bytes) and return its content:
    the one writer of the format, for shard-records and the tests' datasets. `extra`: the
    optional top-level fields (source_info, provenance, stats)."""
    record = {
        "format": FORMAT,
        "version": VERSION,
        "encoding": encoding,
        "image_size": image64.SIZE,
        "classes": [asdict(c) for c in classes],
        "splits": {
            name: {"count": s.count, "class_counts": list(s.class_counts),
                   "shards": [asdict(shard) for shard in s.shards]}
            for name, s in splits.items()
        },
        "teacher": teacher,
        "source": source,
        "options": dict(options),
        **(extra or {}),
    }
    atomic.write_json(manifest_path(dataset_dir), record)
    return record


def write_run_sidecar(dataset_dir: str | Path, made_by: Mapping[str, Any]) -> None:
    """dataset.run.json for the dataset.json just written by this process; `made_by` is
    the provenance collected for it (imnet64.cluster.provenance.collect), of which the
    run fields are kept."""
    root = Path(dataset_dir)
    atomic.write_json(root / RUN_SIDECAR, {
        "format": RUN_FORMAT,
        "manifest_sha256": sha256_file(root / MANIFEST_NAME),
        provenance.KEY: provenance.run_part(made_by),
    })


def dataset_provenance(dataset_dir: str | Path, raw: dict[str, Any] | None = None
                       ) -> dict[str, Any] | None:
    """The dataset's provenance: dataset.json's block with the run fields of
    dataset.run.json when that belongs to this very dataset.json (else they are null).
    None for a manifest written before provenance records."""
    root = Path(dataset_dir)
    if raw is None:
        raw = atomic.read_json(root / MANIFEST_NAME)
    run_fields = None
    try:
        sidecar = atomic.read_json(root / RUN_SIDECAR)
        if (isinstance(sidecar, dict) and sidecar.get("format") == RUN_FORMAT
                and sidecar.get("manifest_sha256") == sha256_file(root / MANIFEST_NAME)):
            run_fields = sidecar.get(provenance.KEY)
    except (OSError, ValueError):
        pass
    return provenance.merge(raw.get(provenance.KEY), run_fields)


def load_manifest(dataset_dir: str | Path) -> Manifest:
    """Read and check `DATASET_DIR/dataset.json` against its contract (types, then what
    types cannot say: class ids 0..C-1 in order, one class count per class, shard files
    inside the dataset); a one-line UserError naming what is wrong if it is not one."""
    root = Path(dataset_dir)
    path = manifest_path(root)
    read_back.require_folder(root, "a dataset folder")
    if not path.exists():
        raise UserError(f"{root} is not an imnet64 dataset (no {MANIFEST_NAME}; run shard-records)")
    raw = read_back.read_json(path, _REBUILD)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise UserError(f"{path} is not an {FORMAT} manifest of version {VERSION}")
    contract = read_back.read_dataclass(path, ManifestContract, _REBUILD)
    problem = _inconsistency(contract)
    if problem:
        raise read_back.damaged(path, problem, _REBUILD)
    return Manifest(
        root=root,
        encoding=contract.encoding,
        image_size=contract.image_size,
        classes=contract.classes,
        splits=dict(contract.splits),
        teacher=contract.teacher,
        raw=raw,
    )


_REBUILD = "write the dataset again with imnet64 shard-records (into a new DATASET_DIR)"


def _inconsistency(m: ManifestContract) -> str | None:
    """What a well-typed manifest may still get wrong (None: nothing)."""
    ids = [c.id for c in m.classes]
    if ids != list(range(len(ids))):
        first = next(i for i, c in enumerate(ids) if c != i) if ids else 0
        return (f"class ids must be 0..{len(ids) - 1} in order (classes[{first}] has id "
                f"{ids[first] if first < len(ids) else None})")
    for name, split in m.splits.items():
        if len(split.class_counts) != len(m.classes):
            return (f"splits.{name}.class_counts has {len(split.class_counts)} counts for "
                    f"{len(m.classes)} classes (a class added or removed by hand?)")
        for shard in split.shards:
            if Path(shard.file).name != shard.file or shard.file in ("", ".", ".."):
                return f"splits.{name}: shard file {shard.file!r} is not a file name"
    return None
