"""Inputs of `imnet64 label` (folder, list file, tar) and the shard split: no teacher needed."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

from imnet64.errors import UserError
from imnet64.formats.image_names import escape_name, unescape_name
from imnet64.label.image_decode import decode_image
from imnet64.label.inputs import InputReadError, names_fingerprint, open_inputs, shard_range
from imnet64.pipeline.sample_images import write_sample

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_sample(root, 12, per_folder=5)  # 000/, 001/, 002/
    (root / "notes.txt").write_text("not an image name: ignored")
    (root / ".hidden.png").write_bytes(b"dot files are not inputs")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(b"nor is anything in a dot folder")
    return root


def test_shard_ranges_tile_every_input_exactly_once():
    for total in (0, 1, 7, 100, 1001):
        for count in (1, 2, 3, 8, 13):
            ranges = [shard_range(total, i, count) for i in range(count)]
            covered = [j for start, stop in ranges for j in range(start, stop)]
            assert covered == list(range(total))
            sizes = [stop - start for start, stop in ranges]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        shard_range(10, 3, 3)


def test_folder_is_searched_recursively_sorted_without_hidden_or_non_images(small_tree):
    inputs = open_inputs(small_tree)
    assert inputs.kind == "folder"
    on_disk = sorted(p.relative_to(small_tree).as_posix() for p in small_tree.rglob("*.png")
                     if not any(part.startswith(".") for part in p.relative_to(small_tree).parts))
    assert inputs.names == on_disk and len(on_disk) == 12
    assert {n.split("/")[0] for n in inputs.names} == {"000", "001", "002"}
    assert inputs.read(0) == (small_tree / inputs.names[0]).read_bytes()


def test_list_file_and_tar_give_the_same_names_and_bytes(small_tree, tmp_path):
    folder = open_inputs(small_tree)
    listing = tmp_path / "images.txt"
    # relative to the list's folder, absolute, a comment, a blank line, a duplicate
    lines = ["# my images", ""]
    lines += [str(small_tree / n) for n in folder.names[:6]]
    lines += [os.path.relpath(small_tree / n, tmp_path) for n in folder.names[6:]]
    lines += [str(small_tree / folder.names[0])]
    listing.write_text("\n".join(lines) + "\n")
    by_list = open_inputs(listing)
    assert by_list.kind == "list" and len(by_list) == 12
    # names are relative to the list's folder when inside it; here the tree is elsewhere,
    # so they are the normalised paths, in sorted order, reading the same bytes
    assert [Path(n).name for n in by_list.names] == [Path(n).name for n in folder.names]

    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tar:
        for name in reversed(folder.names):  # archive order must not matter
            tar.add(small_tree / name, arcname=name)
        tar.add(small_tree / "notes.txt", arcname="notes.txt")
    by_tar = open_inputs(archive)
    # every member is an input: notes.txt too, rejected for its name when read
    assert by_tar.kind == "tar" and by_tar.names == folder.names + ["notes.txt"]
    for i in range(len(folder)):
        assert by_tar.read(i) == folder.read(i) == by_list.read(i)
    with pytest.raises(InputReadError, match="not an image file name"):
        by_tar.read(len(folder))
    assert names_fingerprint(by_tar.names[:-1]) == names_fingerprint(folder.names)
    # a shard's subset reads the right members
    part = by_tar.subset(*shard_range(12, 1, 3))
    assert part.names == folder.names[4:8] and part.read(0) == folder.read(4)
    by_tar.close()
    part.close()


def test_tar_links_and_truncated_archives_become_read_errors(small_tree, tmp_path):
    name = open_inputs(small_tree).names[0]
    data = (small_tree / name).read_bytes()
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(small_tree / name, arcname="a/real.png")
        for linkname, kind, target in (("a/hard.png", tarfile.LNKTYPE, "a/real.png"),
                                       ("a/soft.png", tarfile.SYMTYPE, "real.png"),
                                       ("a/dangling.png", tarfile.SYMTYPE, "gone.png"),
                                       ("a/cycle1.png", tarfile.SYMTYPE, "cycle2.png"),
                                       ("a/cycle2.png", tarfile.SYMTYPE, "cycle1.png")):
            info = tarfile.TarInfo(linkname)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    inputs = open_inputs(archive)
    assert inputs.names == ["a/cycle1.png", "a/cycle2.png", "a/dangling.png", "a/hard.png",
                            "a/real.png", "a/soft.png"]
    assert inputs.read(3) == inputs.read(4) == inputs.read(5) == data
    with pytest.raises(InputReadError, match="broken link"):
        inputs.read(2)
    with pytest.raises(InputReadError, match="too many levels"):
        inputs.read(0)
    # a link in one shard to a member in another still reads
    last = inputs.subset(5, 6)
    inputs.close()
    assert last.names == ["a/soft.png"] and last.read(0) == data
    last.close()

    cut = tmp_path / "cut.tar"
    whole = archive.read_bytes()
    cut.write_bytes(whole[: 512 + len(data) // 2])  # header + half of the first member
    with pytest.raises((UserError, InputReadError)):
        truncated = open_inputs(cut)
        for i in range(len(truncated)):
            truncated.read(i)


def hostile_tar(path: Path, png: bytes, other_png: bytes) -> dict[str, str | None]:
    """An archive with every kind of member a tar can hold. Returns {input name: expected
    reject reason fragment, or None when it must be labeled}: every member but directories."""
    expected: dict[str, str | None] = {}

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        def add(name, expect, data=None, kind=tarfile.REGTYPE, linkname="", arcname=None):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, linkname
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            if kind != tarfile.DIRTYPE:
                expected[arcname or name] = expect

        add("ok", None, kind=tarfile.DIRTYPE)
        add("ok/a.png", None, png)
        add("ok/b.png", None, png)
        add("./dot-slash.png", None, png, arcname="dot-slash.png")
        add("ok//double-slash.png", None, png, arcname="ok/double-slash.png")
        add("long-" + "x" * 150 + ".png", None, png)  # a GNU long-name member
        add("../evil.png", "unsafe path in archive (..)", png)
        add("ok/../../evil2.png", "unsafe path in archive (..)", png)
        add("ok/../inside.png", "unsafe path in archive (..)", png)
        add("/abs.png", "unsafe path in archive (absolute)", png)
        add("ok/hard.png", None, kind=tarfile.LNKTYPE, linkname="ok/a.png")
        add("ok/soft-in.png", None, kind=tarfile.SYMTYPE, linkname="../ok/b.png")
        add("ok/hard-out.png", "link points outside the archive", kind=tarfile.LNKTYPE,
            linkname="../a.png")
        add("ok/soft-abs.png", "link points outside the archive", kind=tarfile.SYMTYPE,
            linkname="/etc/hostname")
        add("ok/soft-up.png", "link points outside the archive", kind=tarfile.SYMTYPE,
            linkname="../../x.png")
        add("dev/null.png", "not a regular file in the archive (character device)",
            kind=tarfile.CHRTYPE)
        add("dev/sda.png", "not a regular file in the archive (block device)",
            kind=tarfile.BLKTYPE)
        add("fifo.png", "not a regular file in the archive (FIFO)", kind=tarfile.FIFOTYPE)
        add("ok/to-fifo.png", "link to a member that cannot be read", kind=tarfile.SYMTYPE,
            linkname="../fifo.png")
        add(".hidden.png", "hidden name", png)
        add("ok/._a.png", "hidden name", b"AppleDouble junk")
        add(".git/x.png", "hidden name", png)
        add("notes.txt", "not an image file name", b"hello")
        add("to-notes.png", "not an image", kind=tarfile.SYMTYPE, linkname="notes.txt")
        add("to-hidden.png", None, kind=tarfile.SYMTYPE, linkname=".hidden.png")
        # archived twice: the later copy is the one tar -x leaves, and the one labeled
        add("ok/twice.png", "archived again later under the same name", png)
        add("ok/twice.png", None, other_png, arcname="ok/twice.png (2nd)")
    return expected


def test_every_tar_member_but_directories_is_an_input_labeled_or_rejected(small_tree, tmp_path):
    tree = open_inputs(small_tree)
    png, other = tree.read(0), tree.read(1)
    archive = tmp_path / "hostile.tar"
    expected = hostile_tar(archive, png, other)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if not m.isdir()]
    inputs = open_inputs(archive)
    assert len(inputs) == len(members) == len(expected) == 26
    outcomes: dict[str, str | None] = {}
    for i, name in enumerate(inputs.names):
        try:
            decoded = decode_image(inputs.read(i))
            reason = decoded.reason
        except InputReadError as e:
            reason = str(e)
        key = name if name not in outcomes else f"{name} (2nd)"
        outcomes[key] = reason
    assert outcomes.keys() == expected.keys()
    for name, fragment in expected.items():
        if fragment is None:
            assert outcomes[name] is None, (name, outcomes[name])
        else:
            assert outcomes[name] is not None and fragment in outcomes[name], (name, outcomes[name])
    # the copy labeled for a name archived twice is the later one, and links reach data
    twice = [i for i, n in enumerate(inputs.names) if n == "ok/twice.png"]
    assert len(twice) == 2 and inputs.read(twice[1]) == other
    assert inputs.read(inputs.names.index("ok/hard.png")) == png
    # a shard of the archive still resolves links to members in other shards
    last = inputs.subset(len(inputs) - 1, len(inputs))
    assert last.names == ["to-notes.png"] and last.read(0) == b"hello"
    inputs.close()
    last.close()


def test_names_escape_to_utf8_text_and_back():
    for raw in (b"plain.png", b"caf\xe9.png", b"a\\b.png", b"a\\xe9.png", b"\\\\x.png",
                "chat été 猫.png".encode(), b"\xff\xfe/\x80.png"):
        name = os.fsdecode(raw)
        text = escape_name(name)
        text.encode("utf-8")  # a lone surrogate would raise here
        assert unescape_name(text) == name and os.fsencode(unescape_name(text)) == raw
    assert escape_name(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"
    assert escape_name("a\\xe9.png") == "a\\\\xe9.png"  # a real backslash is doubled
    assert escape_name("chat été 猫.png") == "chat été 猫.png"  # valid UTF-8 is kept as is


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_inputs(tmp_path / "nope")
    gz = tmp_path / "images.tar.gz"
    with tarfile.open(gz, "w:gz"):
        pass
    with pytest.raises(UserError, match="compressed"):
        open_inputs(gz)
    fake = tmp_path / "fake.tar"
    fake.write_bytes(os.urandom(2000))
    with pytest.raises(UserError, match="tar"):
        open_inputs(fake)


def test_list_entries_that_cannot_be_read_say_why(tmp_path):
    (tmp_path / "adir.png").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    os.symlink(tmp_path / "missing.png", tmp_path / "broken.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    listing = tmp_path / "list.txt"
    listing.write_text("adir.png\nfifo.png\nbroken.png\nloop.png\nnever-there.png\n")
    inputs = open_inputs(listing)
    reasons = {}
    for i, name in enumerate(inputs.names):
        with pytest.raises(InputReadError) as e:
            inputs.read(i)  # must not block on the FIFO
        reasons[name] = str(e.value)
    assert reasons == {
        "adir.png": "is a directory, not a file",
        "broken.png": "broken symbolic link",
        "fifo.png": "not a regular file (FIFO, socket or device)",
        "loop.png": "cannot stat: Too many levels of symbolic links",
        "never-there.png": "file not found",
    }


def _png(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save)
    return buf.getvalue()


def test_decode_modes_match_the_8bit_rgb_pixels(small_tree):
    rgb = np.asarray(Image.open(small_tree / open_inputs(small_tree).names[0]).convert("RGB"))
    plain = decode_image(_png(rgb))
    assert plain.ok and plain.image_format == "png" and (plain.image == rgb).all()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    assert (decode_image(_png(rgba)).image == rgb).all()  # alpha dropped, like decode_png
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    gray16 = gray.astype(np.uint16) * 257
    for data in (_png(gray), _png(gray16)):
        out = decode_image(data)
        assert out.ok and (out.image == gray[..., None]).all()
    big = decode_image(_png(np.zeros((300, 200, 3), np.uint8)), max_side=100)
    assert big.ok and (big.height, big.width) == (300, 200) and big.image.shape == (100, 67, 3)
    digest = hashlib.sha256(_png(rgb)).hexdigest()
    assert decode_image(b"").reason == "empty file"
    assert "not an image" in decode_image(b"hello, I am text").reason
    assert "truncated" in decode_image(_png(rgb)[:300]).reason
    assert hashlib.sha256(_png(rgb)).hexdigest() == digest  # decoding changed nothing
