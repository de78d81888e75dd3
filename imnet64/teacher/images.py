"""Read an image file into the teacher's input: float32 RGB in [0, 1], resized like the seed;
and the same preprocessing for a batch of 64x64 pixels (`imnet64 label` and the online
teacher of `imnet64 train --targets online`).

Any PIL mode becomes RGB (grey is replicated, alpha dropped, palettes expanded, 16-bit grey
scaled from 0..65535). The resize is the seed's: tf.image.resize, bilinear, on floats in
[0, 1] (convert_image_dtype then resize), so a label here matches `imnet64 label`.
"""

from __future__ import annotations

from pathlib import Path

from imnet64.errors import UserError

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


def read_rgb(path: str | Path) -> np.ndarray:
    """The image at `path` as float32 [H, W, 3] in [0, 1]."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # photos from cameras: the way they were taken
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(im, np.float32) / 65535.0
                return np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=-1)
            return np.asarray(im.convert("RGB"), np.float32) / 255.0
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not an image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read image {path}: {' '.join(str(e).split())[:160]}") from None


def to_teacher_input(rgb: np.ndarray, size: tuple[int, int]):
    """float32 [H, W, 3] in [0, 1] -> float32 tf.Tensor [size[0], size[1], 3] (bilinear)."""
    import tensorflow as tf

    return tf.image.resize(tf.convert_to_tensor(rgb, tf.float32), size, method="bilinear")


def pixels_to_teacher_input(pixels, size: tuple[int, int]):
    """A batch of pixels [B, H, W, 3], uint8 or float with values 0..255 (mixed-up images are
    float), -> float32 tf.Tensor [B, size[0], size[1], 3] in [0, 1]: the seed's preprocessing,
    convert_image_dtype's scaling (cast, times 1/255: the same floats for a uint8 batch and
    its float copy), then the bilinear resize without antialiasing."""
    import tensorflow as tf

    scaled = tf.cast(pixels, tf.float32) * (1.0 / 255.0)
    return tf.image.resize(scaled, size, method="bilinear")
