"""Names of input images as both stages see them: which file names are images, and how a
name (bytes, maybe not UTF-8) is written as one line of valid UTF-8 in the label part CSV,
the JSON summaries and logs (escape_name / unescape_name).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterable

# File name endings taken as images (case-insensitive). In a folder, only files with these
# names are inputs. A list file's entries are inputs whatever their names (they were
# listed). In a tar, every member but directories is an input; one without an image name
# is rejected as such. Anything that does not decode is rejected with a reason, never
# silently dropped.
IMAGE_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".bmp", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm",
})


def is_image_name(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_SUFFIXES


def sha256_of_names(names: Iterable[str], end: bytes) -> str:
    """sha256 over `names`, each as its file-system bytes followed by `end`."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode("utf-8", "surrogateescape"))
        h.update(end)
    return h.hexdigest()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def escape_name(name: str) -> str:
    """`name` as valid UTF-8 text on one line, for the CSV, JSON summaries and logs.

    File names are bytes; Python holds the bytes that are not UTF-8 as lone surrogates
    (os.fsdecode's surrogateescape), which cannot be written as UTF-8. Here each such byte
    and each control character (a newline in a name) becomes `\\xNN` (two lower-case hex
    digits), and a backslash is doubled, so the text turns back into the exact name
    (unescape_name). Names that are plain UTF-8 without backslashes are unchanged.
    """
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", name.replace("\\", "\\\\"))
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte: shown, not reversible
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unescape_name(text: str) -> str:
    """The name `escape_name` made `text` from."""
    if "\\" not in text:
        return text
    out, pos = bytearray(), 0
    for m in _ESCAPED.finditer(text):
        out += text[pos:m.start()].encode("utf-8", "surrogateescape")
        code = m.group(1)
        out += b"\\" if code == "\\" else bytes([int(code[1:], 16)])
        pos = m.end()
    out += text[pos:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "surrogateescape")
