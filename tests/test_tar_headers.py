"""label's tar index: tar_headers' lean scan gives exactly tarfile's index, and leaves every
archive it does not fully understand to tarfile."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from unittest import mock

from imnet64.label import inputs, tar_headers

import pytest


def _index(path: Path, lean: bool) -> tuple:
    if lean:
        s = inputs._tar_input(path)
    else:
        off = tar_headers.Unusual("tarfile only")
        with mock.patch.object(tar_headers, "plain_members", side_effect=off):
            s = inputs._tar_input(path)
    return s.names, list(s.offsets), list(s.sizes), s.special


def _tar(path: Path, members: list[tuple[str, bytes | None]], fmt: int) -> Path:
    """Members (name, data; None for a folder) in `fmt` (tarfile.USTAR_FORMAT, ...)."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


PLAIN = [("train", None), ("train/0000002.png", b"b" * 700), ("train/0000001.png", b"a" * 512),
         ("./x/../y.png", b"c"), ("../up.png", b"d"), (".hidden.png", b"e"),
         ("notes.txt", b"f" * 1025), ("/abs.png", b"g"), ("empty.png", b""),
         ("d" * 90 + "/" + "p" * 60 + ".png", b"h" * 3),  # > 100 chars: ustar prefix field
         ("twice.png", b"1"), ("twice.png", b"22"), ("caf\u00e9.png", b"i")]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT])
def test_plain_archives_are_indexed_by_the_lean_scan_exactly_as_tarfile_does(tmp_path, fmt):
    members = PLAIN if fmt == tarfile.USTAR_FORMAT else PLAIN[:-4] + PLAIN[-3:]
    path = _tar(tmp_path / "a.tar", members, fmt)
    scanned = list(tar_headers.plain_members(path))  # no Unusual: the lean scan did it all
    assert len([m for m in scanned if not m[1]]) == len(members) - 1
    assert _index(path, lean=True) == _index(path, lean=False)


def test_v7_folder_with_a_trailing_slash_is_a_folder(tmp_path):
    path = tmp_path / "v7.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("sub/")
        info.type = tarfile.AREGTYPE
        tar.addfile(info)
        data = tarfile.TarInfo("sub/a.png")
        data.size = 3
        tar.addfile(data, io.BytesIO(b"abc"))
    assert [m[:2] for m in tar_headers.plain_members(path)] == [("sub", True),
                                                                ("sub/a.png", False)]
    assert _index(path, lean=True) == _index(path, lean=False)


def _with_link(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("a.png")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
        link = tarfile.TarInfo("b.png")
        link.type, link.linkname = tarfile.LNKTYPE, "a.png"
        tar.addfile(link)


def _long_gnu_name(path: Path) -> None:
    _tar(path, [("n" * 150 + ".png", b"x")], tarfile.GNU_FORMAT)


def _pax(path: Path) -> None:
    _tar(path, [("caf\u00e9-pax.png", b"x")], tarfile.PAX_FORMAT)


def _truncated(path: Path) -> None:
    _tar(path, [("a.png", b"a" * 2000)], tarfile.USTAR_FORMAT)
    path.write_bytes(path.read_bytes()[:1024])


def _bad_checksum(path: Path) -> None:
    _tar(path, [("a.png", b"a"), ("b.png", b"b")], tarfile.USTAR_FORMAT)
    raw = bytearray(path.read_bytes())
    raw[1024 + 10] ^= 1  # second header's name
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("make", [_with_link, _long_gnu_name, _pax, _truncated, _bad_checksum])
def test_what_the_lean_scan_does_not_know_goes_to_tarfile_with_the_same_result(tmp_path, make):
    path = tmp_path / "odd.tar"
    make(path)
    with pytest.raises(tar_headers.Unusual):
        list(tar_headers.plain_members(path))
    try:
        expected = _index(path, lean=False)
    except Exception as e:  # tarfile's verdict (a UserError) must stay the verdict
        with pytest.raises(type(e), match=str(e)[:40].replace("(", r"\(").replace(")", r"\)")):
            _index(path, lean=True)
        return
    assert _index(path, lean=True) == expected
