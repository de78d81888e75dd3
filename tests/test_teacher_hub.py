"""TF Hub handles for real: a compressed module served over HTTP on 127.0.0.1, fetched into a
cache with `imnet64 teacher fetch`, then loaded from that cache with the server gone."""

from __future__ import annotations

import contextlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

from imnet64.errors import UserError
from imnet64.teacher import hub as hub_cache
from imnet64.teacher import load_teacher
from imnet64.teacher.export import export_hub_style_saved_model

import numpy as np
import pytest
import tensorflow as tf
from imnet64_cli.main import main as cli_main


def _tiny_classifier(tmp: Path, classes: int = 1001) -> Path:
    """A small real SavedModel with the teacher interface: [N,224,224,3] -> [N, classes]."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((224, 224, 3))
    x = tf.keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(classes)(x))
    out = tmp / f"tiny{classes}"
    export_hub_style_saved_model(model, out)
    return out


def _targz(folder: Path) -> bytes:
    """The module as TF Hub serves it: a tar.gz of the SavedModel's contents."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    return buf.getvalue()


@contextlib.contextmanager
def serve(routes: dict[str, bytes]):
    """HTTP on 127.0.0.1 (random port) serving `routes` only for ?tf-hub-format=compressed,
    like tfhub.dev. Yields (base_url, requests seen)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            path, _, query = self.path.partition("?")
            body = routes.get(path) if query == "tf-hub-format=compressed" else None
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modules")
    return {"good": _tiny_classifier(tmp), "ten_classes": _tiny_classifier(tmp, classes=10)}


def test_fetch_then_load_from_cache_without_the_server(modules, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "hub-cache"
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    with serve({"/google/tiny/1": _targz(modules["good"])}) as (base, seen):
        handle = f"{base}/google/tiny/1"
        assert cli_main(["teacher", "fetch", handle, "--cache-dir", str(cache)]) == 0
        assert seen == ["/google/tiny/1?tf-hub-format=compressed"]
    out = capsys.readouterr().out
    assert f"export TFHUB_CACHE_DIR={cache}" in out
    module_dir = hub_cache.cached_module_dir(handle, cache)  # TF Hub's own layout
    assert (module_dir / "saved_model.pb").is_file() and str(module_dir) in out

    # Server gone: the handle now loads only from the cache.
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    teacher = load_teacher(handle)
    assert teacher.name == handle and teacher.path == module_dir
    images = tf.random.stateless_uniform([2, 224, 224, 3], seed=(3, 4))
    direct = load_teacher(str(modules["good"]), optimize=False).logits(images).numpy()
    np.testing.assert_allclose(teacher.logits(images).numpy(), direct, rtol=0, atol=1e-5)

    # A second fetch of a cached handle needs no server either.
    assert cli_main(["teacher", "fetch", handle, "--cache-dir", str(cache)]) == 0


def test_uncached_handle_offline_says_to_fetch_on_a_login_node(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty-cache"))
    with serve({}) as (base, _):
        pass  # the port is closed again: like a compute node that cannot reach the host
    with pytest.raises(UserError) as err:
        load_teacher(f"{base}/google/tiny/1")
    message = str(err.value)
    assert "\n" not in message and "not in the TF Hub cache" in message
    assert "imnet64 teacher fetch" in message and "login node" in message


def test_fetch_failures_are_one_line_and_leave_the_cache_clean(modules, tmp_path, capsys):
    cache = tmp_path / "cache"
    routes = {"/bad/notatar/1": b"<html>not a module</html>",
              "/bad/tenclasses/1": _targz(modules["ten_classes"])}
    with serve(routes) as (base, _):
        for path, expected in (("/missing/1", "HTTP 404 Not Found"),
                               ("/bad/notatar/1", "does not appear to be a valid module"),
                               ("/bad/tenclasses/1", "expected float32 logits [1, 1001]")):
            assert cli_main(["teacher", "fetch", base + path, "--cache-dir", str(cache)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert [p for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_fetch_refuses_a_local_path(tmp_path, capsys):
    assert cli_main(["teacher", "fetch", str(tmp_path), "--cache-dir", str(tmp_path / "c")]) == 2
    assert "fetch takes a TF Hub URL handle" in capsys.readouterr().err
