"""Damaged shards as one line that names them, the same in `train` and `evaluate`.

A shard that is missing or has another size than its manifest says is found before reading
(one stat per file); one whose bytes were changed shows only when reading it fails, and then
the failing split's shards are checked against the manifest's sha256s to name the culprit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from imnet64.errors import UserError
from imnet64.formats.manifest import Manifest
from imnet64.train.checkpoints import one_line

import tensorflow as tf

REBUILD = "rebuild the dataset with imnet64 shard-records"


def check_sizes(manifest: Manifest, splits: list[str]) -> None:
    """UserError naming the first shard of `splits` that is missing or of another size."""
    problems = manifest.shard_size_problems(splits)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}: {REBUILD} (imnet64 inspect --verify checks it)")


def read_error(manifest: Manifest, split: str, error: tf.errors.OpError,
               paths: list[Path] | None = None) -> str:
    """The message for a failed read of `split` (of its shards `paths`, default all)."""
    damaged = manifest.damaged_shards(split, paths)
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        return (f"{damaged[0]}{more}: reading the {split} split failed ({one_line(error)}); "
                f"{REBUILD}")
    return (f"reading the {split} split of {manifest.root} failed ({one_line(error)}); "
            "its shards match the manifest's sha256s")


def guarded(batches: Iterable, manifest: Manifest, split: str,
            paths: list[Path] | None = None) -> Iterator:
    """Iterate `batches`; a read error becomes a UserError naming the damaged shard."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            raise UserError(read_error(manifest, split, e, paths)) from e
        yield batch
