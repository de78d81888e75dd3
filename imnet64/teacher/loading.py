"""Load a teacher (TF Hub handle, local SavedModel directory, or the offline teacher) and
wrap it in a fast inference function.

Speed: the teacher's forward pass is the hot path of labeling 1.28 M images on CPU. Batch
norm costs about a fifth of MobileNet V2's CPU time here. The offline teacher is exported with
batch norm already folded into its convolutions; for any other SavedModel (TF Hub's
MobileNet V2 keeps FusedBatchNormV3 ops) `optimize=True` freezes the variables into constants
and folds the batch norms into the convolution kernels at load time (graph_fold).
bench/teacher_speed.py measures the variants side by side; the optimized graph gives the same
top-1 as the plain SavedModel call (tests/test_teacher_model.py states the logit tolerance).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from imnet64.cluster.environment import TEACHER_VAR, Environment
from imnet64.errors import UserError, one_line
from imnet64.formats.class_names import imagenet_class_names
from imnet64.teacher import hub as hub_cache

import numpy as np

if TYPE_CHECKING:  # TensorFlow loads on first use: bad specs fail in a blink, --help is fast
    import tensorflow as tf

DEFAULT_HANDLE = "https://tfhub.dev/google/tf2-preview/mobilenet_v2/classification/2"
OFFLINE_SPEC = "offline"
TEACHER_ENV = TEACHER_VAR  # the teacher when none is given (else DEFAULT_HANDLE)
IMAGE_SIZE = (224, 224)
NUM_CLASSES = 1001
# Fastest batch size measured for the frozen MobileNet V2 on 2 CPU cores (bench/teacher_speed.py).
RECOMMENDED_BATCH_SIZE = 64

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Teacher:
    """A 1001-class ImageNet classifier: images float32 [N, 224, 224, 3] in [0, 1] -> logits."""

    name: str  # what outputs record; load_teacher(name) loads the same teacher again
    path: Path  # the local SavedModel directory
    logits: Callable[[tf.Tensor], tf.Tensor]  # a tf.function; index 0 is background
    image_size: tuple[int, int] = IMAGE_SIZE
    num_classes: int = NUM_CLASSES
    class_names: tuple[str, ...] = field(default_factory=imagenet_class_names, repr=False)
    recommended_batch_size: int = RECOMMENDED_BATCH_SIZE
    folded_batch_norms: int = 0  # batch norms folded into convolutions at load (optimize)

    def weights_sha256(self) -> str | None:
        """The sha256 of its weights, as every output's provenance records it."""
        from imnet64.teacher.fingerprint import teacher_sha256

        return teacher_sha256(self.path)

    def top_k(self, images, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [N, k], class indices [N, k]) of the softmax over all 1001 logits."""
        import tensorflow as tf

        probs = tf.nn.softmax(self.logits(tf.convert_to_tensor(images, tf.float32)), axis=-1)
        values, indices = tf.math.top_k(probs, k=k)
        return values.numpy(), indices.numpy()


def load_teacher(spec: str | None = None, optimize: bool = True) -> Teacher:
    """Load a teacher from `spec`:

    - None: $IMNET64_TEACHER if set, else the seed's TF Hub handle (DEFAULT_HANDLE);
    - an http(s):// or gs:// TF Hub handle: from $TFHUB_CACHE_DIR if cached there (no network),
      else downloaded into it;
    - a local SavedModel directory;
    - "offline": torchvision's MobileNet V2 converted once into $IMNET64_HOME/teachers/.

    `optimize=False` keeps the plain SavedModel call (the reference the fast path is checked
    against). Any unusable spec raises a one-line UserError.
    """
    spec = str(spec or "").strip() or Environment.read().teacher or DEFAULT_HANDLE
    if spec == OFFLINE_SPEC:
        from imnet64.teacher.offline import ensure_offline_teacher

        path, name = ensure_offline_teacher(), OFFLINE_SPEC
    elif hub_cache.is_url_handle(spec):
        path, name = hub_cache.resolve_handle(spec), spec
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise UserError(f"teacher {spec!r} is neither a TF Hub URL, nor 'offline', nor an "
                            f"existing SavedModel directory")
        path = path.absolute()
        name = str(path)
    return _load_saved_model(path, name, optimize)


def _load_saved_model(path: Path, name: str, optimize: bool) -> Teacher:
    import tensorflow as tf

    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise UserError(f"teacher {name}: {path} is not a SavedModel directory "
                        "(no saved_model.pb)")
    try:
        module = tf.saved_model.load(str(path))
    except Exception as e:  # TF raises a zoo of types for damaged models
        raise UserError(f"teacher {name}: cannot load the SavedModel in {path} "
                        f"({one_line(e)})") from None
    if not callable(module):
        raise UserError(f"teacher {name}: the SavedModel in {path} is not callable "
                        "(expected a TF2 image classifier like TF Hub's MobileNet V2)")

    spec = tf.TensorSpec([None, *IMAGE_SIZE, 3], tf.float32, name="images")
    try:
        concrete = tf.function(lambda images: module(images)).get_concrete_function(spec)
    except Exception as e:
        raise UserError(f"teacher {name}: does not take float32 images [N, 224, 224, 3] "
                        f"({one_line(e)})") from None
    logits = tf.function(lambda images: module(images), input_signature=[spec])
    folded = 0
    if optimize:
        fast = fold_frozen(concrete, spec)
        if fast is not None:
            logits, folded = fast
    out = logits(tf.zeros([1, *IMAGE_SIZE, 3]))
    if not isinstance(out, tf.Tensor):
        raise UserError(f"teacher {name}: returns {type(out).__name__}, expected one tensor of "
                        f"logits [N, {NUM_CLASSES}]")
    if out.shape != (1, NUM_CLASSES) or out.dtype != tf.float32:
        raise UserError(f"teacher {name}: returns {out.dtype.name} {list(out.shape)} per image, "
                        f"expected float32 logits [1, {NUM_CLASSES}] (background + 1000 classes)")
    teacher = Teacher(name=name, path=path, logits=logits, folded_batch_norms=folded)
    object.__setattr__(teacher, "_module", module)  # keep variables alive for the plain path
    return teacher


def fold_frozen(concrete, spec, fold: bool = True, min_folded: int = 1):
    """(fast tf.function, number of batch norms folded) for `concrete`, or None when there is
    nothing to gain (fewer than `min_folded` batch norms to fold) or it cannot be frozen.

    Variables become constants (convert_variables_to_constants_v2, which also inlines the
    SavedModel's nested calls into one flat graph), then graph_fold rewrites BN into conv.
    Freezing alone measured no faster than the plain SavedModel call here, so without
    anything folded the plain call is kept.
    """
    from imnet64.teacher.graph_fold import fold_batch_norms

    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    try:
        with _quiet_native_stderr():  # grappler logs a few INFO lines straight to fd 2
            frozen = convert_variables_to_constants_v2(concrete)
        graph_def, folded = frozen.graph.as_graph_def(), 0
        if fold:
            graph_def, folded = fold_batch_norms(graph_def)
        if folded < min_folded:
            return None
        (input_name,) = [t.name for t in frozen.inputs]
        output_names = [t.name for t in frozen.outputs]
        wrapped = tf.compat.v1.wrap_function(
            lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        graph = wrapped.graph
        pruned = wrapped.prune(graph.as_graph_element(input_name),
                               [graph.as_graph_element(n) for n in output_names])
    except Exception as e:  # exotic graphs (tables, control flow): the plain call still works
        log.warning("teacher: batch norms not folded, using the plain SavedModel call (%s)",
                    one_line(e))
        return None
    structure = concrete.structured_outputs  # the pruned function returns a flat list
    fn = tf.function(lambda images: tf.nest.pack_sequence_as(structure, pruned(images)),
                     input_signature=[spec])
    return fn, folded


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence native (C++) writes to stderr for the block when TF logging is turned down."""
    if Environment.read().tf_cpp_min_log_level in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


