"""Load a teacher (TF Hub handle, local SavedModel directory, or the offline teacher) and
wrap it in a fast inference function.

Speed: the teacher's forward pass is the hot path of labeling 1.28 M images on CPU. A loaded
SavedModel reads every weight from a resource variable at each call, which keeps grappler
from fusing ops. We freeze the variables into constants (convert_variables_to_constants_v2),
so grappler folds constants and fuses Conv2D + BiasAdd + Relu6 into single kernels; the
offline teacher is also exported with batch norm already folded into its convolutions.
bench/teacher_speed.py measures the variants side by side; the frozen graph gives the same
top-1 as the plain SavedModel (tests/test_teacher_model.py states the logit tolerance).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from imnet64.class_names import imagenet_class_names
from imnet64.errors import UserError
from imnet64.teacher import hub as hub_cache

import numpy as np

if TYPE_CHECKING:  # TensorFlow loads on first use: bad specs fail in a blink, --help is fast
    import tensorflow as tf

DEFAULT_HANDLE = "https://tfhub.dev/google/tf2-preview/mobilenet_v2/classification/2"
OFFLINE_SPEC = "offline"
TEACHER_ENV = "IMNET64_TEACHER"  # the teacher when none is given (else DEFAULT_HANDLE)
IMAGE_SIZE = (224, 224)
NUM_CLASSES = 1001
# Fastest batch size measured for the frozen MobileNet V2 on 2 CPU cores (bench/teacher_speed.py).
RECOMMENDED_BATCH_SIZE = 64


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
    spec = str(spec or "").strip() or os.environ.get(TEACHER_ENV, "").strip() or DEFAULT_HANDLE
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
                        f"({type(e).__name__}: {_one_line(e)})") from None
    if not callable(module):
        raise UserError(f"teacher {name}: the SavedModel in {path} is not callable "
                        "(expected a TF2 image classifier like TF Hub's MobileNet V2)")

    spec = tf.TensorSpec([None, *IMAGE_SIZE, 3], tf.float32, name="images")
    try:
        concrete = tf.function(lambda images: module(images)).get_concrete_function(spec)
    except Exception as e:
        raise UserError(f"teacher {name}: does not take float32 images [N, 224, 224, 3] "
                        f"({type(e).__name__}: {_one_line(e)})") from None
    plain = tf.function(lambda images: module(images), input_signature=[spec])
    logits = _frozen(concrete, spec) if optimize else plain
    out = logits(tf.zeros([1, *IMAGE_SIZE, 3]))
    if not isinstance(out, tf.Tensor):
        raise UserError(f"teacher {name}: returns {type(out).__name__}, expected one tensor of "
                        f"logits [N, {NUM_CLASSES}]")
    if out.shape != (1, NUM_CLASSES) or out.dtype != tf.float32:
        raise UserError(f"teacher {name}: returns {out.dtype.name} {list(out.shape)} per image, "
                        f"expected float32 logits [1, {NUM_CLASSES}] (background + 1000 classes)")
    teacher = Teacher(name=name, path=path, logits=logits)
    object.__setattr__(teacher, "_module", module)  # keep variables alive for the plain path
    return teacher


def _frozen(concrete, spec: tf.TensorSpec) -> Callable[[tf.Tensor], tf.Tensor]:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs  # the frozen function returns a flat list
    return tf.function(lambda images: tf.nest.pack_sequence_as(structure, frozen(images)),
                       input_signature=[spec])


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]
