"""Decode any image file's bytes to RGB uint8, or say why not.

PIL is used (not tf.io.decode_image) because it reads more formats and modes (16-bit,
palette, CMYK, TIFF, ...), lets us check the pixel count *before* decoding (a 50 kB PNG can
claim 100 000 x 100 000 pixels), and reports a truncated file as an error we can record
instead of an op failure that ends a tf.data pipeline.

Conversions, chosen to match what the seed's `tf.image.decode_png(channels=3)` gives for the
common cases: alpha is dropped (not composited), grayscale is replicated to three channels,
palette images are expanded; 16-bit samples keep their 8 high bits; JPEG EXIF orientation
is applied so photos are upright.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# A 64x64 data set has no business with images above this; it also bounds the memory one
# decode can take (64 Mpx x 4 bytes). PIL's own guard is a warning up to 2x its limit.
MAX_PIXELS = 64 * 1024 * 1024

Image.MAX_IMAGE_PIXELS = None  # we enforce MAX_PIXELS ourselves, before decoding

# Bytes one decode holds at its peak, per pixel of the file's image: PIL's decoded image (4
# for RGB, which PIL stores as 32-bit pixels), a rotated or mode-converted copy (up to 4),
# our uint8 RGB array (3) and, when shrinking, PIL's copy of it (4): 11-12 on the paths in
# _to_rgb and _shrink. What `reserve` is told before decoding (batch_reader.ByteBudget).
DECODE_BYTES_PER_PIXEL = 12


NATIVE_SIZE = (64, 64)  # (height, width) of the data set's images


def to_native_size(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [64, 64, 3]: unchanged if already 64x64, else resized with
    PIL's bilinear filter (which widens its support when shrinking, i.e. antialiases).

    The one definition of "this image at the data set's size", for labeling and records.
    """
    if rgb.shape[:2] == NATIVE_SIZE:
        return rgb
    resized = Image.fromarray(rgb).resize(NATIVE_SIZE[::-1], Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


@dataclass(frozen=True)
class Decoded:
    """The outcome of decoding one file: `image` set, or `reason` set."""

    image: np.ndarray | None  # uint8 [H, W, 3]
    image_format: str  # "png", "jpeg", ... ("" if unknown)
    height: int
    width: int
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.image is not None


# File signatures, to tell "a damaged PNG" from "not an image at all" in reject reasons.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _format_by_signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


def _reject(reason: str, image_format: str = "", height: int = 0, width: int = 0) -> Decoded:
    return Decoded(None, image_format, height, width, reason)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] from any PIL mode."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (or 32-bit integer) grayscale: PIL's convert("L") clips instead of scaling.
        # Kept in the array's own width (no int64 copy: 8 bytes a pixel on a 64 Mpx image)
        a = np.asarray(im)
        if a.dtype.kind != "u" or a.dtype.itemsize != 2:
            a = np.clip(a, 0, 65535)
        a = (a >> 8).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.nan_to_num(a)
        scale = 255.0 if a.max(initial=0.0) <= 1.0 else 1.0
        a = np.clip(a * scale, 0, 255).round().astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode in ("RGBA", "RGBX", "RGBa"):
        return np.asarray(im, dtype=np.uint8)[..., :3].copy()
    if mode in ("P", "PA"):
        # RGBA first: palettes with transparency warn (and lose it) when converted to RGB
        return np.asarray(im.convert("RGBA"), dtype=np.uint8)[..., :3].copy()
    if mode in ("LA", "La"):
        im = im.convert("L")
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Integer-factor box reduction so that no side exceeds `max_side` (deterministic)."""
    factor = -(-max(rgb.shape[:2]) // max_side)
    return np.asarray(Image.fromarray(rgb).reduce(factor), dtype=np.uint8)


def decode_image(data: bytes, max_side: int | None = None,
                 reserve: Callable[[int], None] | None = None) -> Decoded:
    """Decode `data` (a whole image file) to RGB uint8, never raising for bad input.

    `max_side`: images with a longer side are shrunk by an integer factor (box filter) to
    fit; `height`/`width` still report the original size. `reserve(n)` is called with the
    bytes the decode will hold (DECODE_BYTES_PER_PIXEL per pixel) once the header is read,
    before the pixels are decoded; it may block until memory is free.
    """
    if not data:
        return _reject("empty file")
    fmt = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            fmt = (im.format or "").lower()
            width, height = im.size
            if width <= 0 or height <= 0:
                return _reject(f"image has no pixels ({width}x{height})", fmt, height, width)
            if width * height > MAX_PIXELS:
                return _reject(
                    f"image too large: {width}x{height} pixels (limit {MAX_PIXELS}; "
                    "possible decompression bomb)",
                    fmt,
                    height,
                    width,
                )
            if reserve is not None:
                reserve(width * height * DECODE_BYTES_PER_PIXEL)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animated GIF/WebP/TIFF: the first frame
            im.load()
            if fmt in ("jpeg", "mpo", "tiff", "webp"):
                im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
            if max_side is not None and max(rgb.shape[:2]) > max_side:
                rgb = _shrink(rgb, max_side)
    except UnidentifiedImageError:
        known = _format_by_signature(data)
        if known:
            return _reject(f"corrupt {known} file (header unreadable)", known.lower())
        return _reject("not an image (unrecognised format)")
    except Image.DecompressionBombError as e:
        return _reject(f"image too large: {e}")
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
            MemoryError) as e:
        # truncated data, bad CRCs, broken headers...: PIL raises a zoo of types
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        return _reject(f"corrupt or truncated image: {message}", fmt)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return _reject(f"unexpected decoded shape {rgb.shape}", fmt)
    return Decoded(np.ascontiguousarray(rgb), fmt, height, width)
