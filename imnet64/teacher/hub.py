"""Resolve a TF Hub handle to a local SavedModel directory through TF Hub's own cache.

TF Hub keeps a URL handle's module in ``$TFHUB_CACHE_DIR/<sha1(handle)>`` (default
``<tmp>/tfhub_modules``). For http(s) handles it downloads ``<handle>?tf-hub-format=compressed``
(a tar.gz of the SavedModel; tfhub.dev redirects that to Kaggle) and unpacks it there,
atomically with a lock file. We use the very same resolver, so a directory filled by
``imnet64 teacher fetch`` on a login node is found on compute nodes with no network access:
a cached module is returned before any connection is attempted.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

from imnet64.cluster.environment import TFHUB_CACHE_VAR, variable_set
from imnet64.errors import UserError

TFHUB_CACHE_ENV = TFHUB_CACHE_VAR
# A download that cannot connect must fail, not hang a compute node's job until its limit.
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


def is_url_handle(spec: str) -> bool:
    return spec.startswith(("http://", "https://", "gs://"))


def cache_dir() -> Path:
    """The TF Hub cache directory in effect ($TFHUB_CACHE_DIR, else <tmp>/tfhub_modules)."""
    from tensorflow_hub import resolver

    return Path(resolver.tfhub_cache_dir(use_temp=True))


def cached_module_dir(handle: str, cache: Path | None = None) -> Path:
    """Where TF Hub caches `handle` (exists only once downloaded)."""
    return (cache or cache_dir()) / hashlib.sha1(handle.encode("utf8")).hexdigest()


def is_cached(handle: str, cache: Path | None = None) -> bool:
    path = cached_module_dir(handle, cache)
    return path.is_dir() and any(path.iterdir())


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def tfhub_cache_env(cache: Path) -> contextlib.AbstractContextManager[None]:
    """Point TF Hub at `cache` for the duration of the block (it reads the variable per call)."""
    return variable_set(TFHUB_CACHE_ENV, str(cache))


def fetch_hint(handle: str) -> str:
    return (f"run `imnet64 teacher fetch {handle} --cache-dir DIR` on a login node (with "
            f"internet) and set {TFHUB_CACHE_ENV}=DIR here, or use --teacher offline")


def resolve_handle(handle: str, download: bool = True, fetching: bool = False) -> Path:
    """The local SavedModel directory of URL `handle`: from the TF Hub cache if there,
    else downloaded into it (unless `download` is False). Errors are one-line UserErrors;
    `fetching` words them for `imnet64 teacher fetch` (no advice to run fetch)."""
    cache = cache_dir()
    if is_cached(handle, cache):
        return cached_module_dir(handle, cache)
    if not download:
        raise UserError(f"teacher {handle} is not in the TF Hub cache {cache}; "
                        f"{fetch_hint(handle)}")
    import tensorflow as tf
    import tensorflow_hub as hub

    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            path = Path(hub.resolve(handle))
    except (OSError, ValueError, tf.errors.OpError) as e:
        # OSError covers URLError/HTTPError, timeouts, refused connections and TF Hub's
        # "does not appear to be a valid module" for a response that is no tar archive.
        if fetching:
            raise UserError(f"cannot download {handle} ({_reason(e)})") from None
        raise UserError(f"teacher {handle} is not in the TF Hub cache {cache} and cannot be "
                        f"downloaded ({_reason(e)}); {fetch_hint(handle)}") from None
    return path


def _reason(e: BaseException) -> str:
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        text = f"HTTP {e.code} {e.reason}"
    else:
        text = str(getattr(e, "reason", None) or e)
    return " ".join(text.split())[:200]
