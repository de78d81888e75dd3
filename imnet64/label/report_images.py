"""A label part's stored image bytes -> the 64x64 RGB tile the label report shows."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

TILE = 64


def thumbnail(encoded: bytes, size: int = TILE) -> np.ndarray:
    """The image fitted (aspect kept) and centred on a grey size x size tile, uint8 RGB.
    An image PIL cannot decode (the label stage read it, so this means damage) is a grey
    tile with a red cross rather than an error: the report is a view, not a check."""
    tile = Image.new("RGB", (size, size), (128, 128, 128))
    try:
        with Image.open(io.BytesIO(encoded)) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
            tile.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    except (OSError, ValueError, Image.DecompressionBombError):
        out = np.asarray(tile).copy()
        idx = np.arange(size)
        out[idx, idx] = out[idx, size - 1 - idx] = (200, 0, 0)
        return out
    return np.asarray(tile)
