"""Fill a TF Hub cache directory with a handle's module, for machines without internet.

Run once where there is network (a login node); compute nodes then set
TFHUB_CACHE_DIR to the same directory and load the handle without any connection.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from imnet64.errors import UserError
from imnet64.teacher import hub as hub_cache


def fetch_handle(handle: str, cache_dir: str | os.PathLike) -> Path:
    """Download `handle` into `cache_dir` (TF Hub's layout) and check that it loads as a
    teacher (float32 images [N, 224, 224, 3] -> 1001 logits). Returns the module directory.
    A module already cached there is checked, not downloaded again."""
    if not hub_cache.is_url_handle(handle):
        raise UserError(f"fetch takes a TF Hub URL handle (https://..., gs://...), got "
                        f"{handle!r}; a local SavedModel folder can be passed to --teacher as is")
    cache = Path(cache_dir).expanduser().absolute()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create cache directory {cache}: {e.strerror}") from None
    was_cached = hub_cache.is_cached(handle, cache)
    with hub_cache.tfhub_cache_env(cache):
        path = hub_cache.resolve_handle(handle, fetching=True)
        from imnet64.teacher.loading import _load_saved_model

        try:
            _load_saved_model(path, handle, optimize=False)
        except UserError:
            if not was_cached:  # don't leave a module behind that compute nodes would trip on
                shutil.rmtree(path, ignore_errors=True)
                Path(f"{path}.descriptor.txt").unlink(missing_ok=True)
            raise
    return path
