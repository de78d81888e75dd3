"""Images as dataset shards store them: always 64x64 RGB, as PNG bytes or raw uint8 pixels.

An 8-bit 64x64 PNG keeps its original bytes (no re-encode: exact round trip). Anything else
(another size, JPEG, 16-bit, 1/2/4-bit PNG, ...) is decoded, converted to RGB, resized to
64x64 and re-encoded as PNG. The resize is a plain bicubic resize of the whole image (no
crop), like the teacher saw it. `raw` stores the decoded 64*64*3 bytes, row-major HWC.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

SIZE = 64
CHANNELS = 3
RAW_BYTES = SIZE * SIZE * CHANNELS
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types TensorFlow's decode_png(channels=3) turns into RGB exactly as PIL's
# convert("RGB") does: grey, RGB, palette, grey+alpha, RGBA (alpha dropped).
_COLOR_TYPES = (0, 2, 3, 4, 6)


class ImageError(Exception):
    """The bytes are not a decodable image."""


def is_png64(data: bytes) -> bool:
    """True for an 8-bit 64x64 PNG (read from its IHDR header, no decode)."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return False
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    return width == SIZE and height == SIZE and depth == 8 and color_type in _COLOR_TYPES


def decode_rgb64(data: bytes) -> Image.Image:
    """The image as 64x64 RGB (resized if it is another size)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB")
    except Exception as e:  # PIL raises many types for bad data
        raise ImageError(str(e) or type(e).__name__) from None
    if rgb.size != (SIZE, SIZE):
        rgb = rgb.resize((SIZE, SIZE), Image.BICUBIC)
    return rgb


def to_png64(data: bytes) -> tuple[bytes, bool]:
    """(64x64 PNG bytes, converted?): the original bytes when already an 8-bit 64x64 PNG."""
    if is_png64(data):
        return data, False
    out = io.BytesIO()
    decode_rgb64(data).save(out, format="PNG", optimize=False)
    return out.getvalue(), True


def to_raw64(data: bytes) -> tuple[bytes, bool]:
    """(64*64*3 uint8 bytes, converted?) where converted means "was not an 8-bit 64x64 PNG"."""
    pixels = np.asarray(decode_rgb64(data), dtype=np.uint8)
    return pixels.tobytes(), not is_png64(data)


def encode64(data: bytes, encoding: str) -> tuple[bytes, bool]:
    if encoding == "png":
        return to_png64(data)
    if encoding == "raw":
        return to_raw64(data)
    raise ValueError(f"unknown encoding {encoding!r} (png or raw)")


def check_decodes(data: bytes) -> None:
    """Raise ImageError unless the image decodes (used for kept-as-is files never decoded here)."""
    decode_rgb64(data)
