"""Real 64x64 photos for the demo and the tests, cut from photos that ship inside packages.

No download: scikit-image's `skimage.data` files (CC0 / public domain) and matplotlib's
`grace_hopper.jpg` (public domain) are read straight from site-packages. The sample is a
deterministic function of `count`: the same call gives the same files, byte for byte.

`HELDOUT_PHOTOS` are other photos of the same packages, never cut into the training sample:
crops of them measure how well a student matches its teacher on images from photos that
gave no image to training (the demo's and bench/distill.py's held-out figure). They are not
ImageNet-like scenes (a clock, a gift box, a microscope cell, text, a colour chart): what
they test is that the student learned the teacher's function, not one photo's crops.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from imnet64 import atomic
from imnet64.formats.image64 import SIZE

import numpy as np
from PIL import Image

# (package, file inside the package) — photos of real things, ImageNet-like subjects first.
PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "data/chelsea.png"),  # a cat
    ("skimage", "data/coffee.png"),  # a cup of coffee
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/coins.png"),
    ("skimage", "data/brick.png"),
    ("skimage", "data/grass.png"),
    ("skimage", "data/gravel.png"),
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/camera.png"),
    ("skimage", "data/moon.png"),
    ("skimage", "data/horse.png"),
)

# Photos that are never in PHOTOS' sample (motorcycle_right.png is left out too: it is the
# stereo twin of motorcycle_left.png)
HELDOUT_PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "data/clock_motion.png"),
    ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
    ("skimage", "data/cell.png"),
    ("skimage", "data/color.png"),
    ("skimage", "data/page.png"),
    ("skimage", "data/text.png"),
    ("skimage", "data/microaneurysms.png"),
    ("skimage", "data/chessboard_RGB.png"),
)


def photo_stem(image_name: str) -> str:
    """The source photo of a sample file name `<photo stem>_<round>.png`."""
    return Path(image_name).stem.rsplit("_", 1)[0]


# Crop side as a fraction of the photo's short side, largest first, so small samples
# hold whole-object views (the crops a classifier recognises best).
SCALES = (1.0, 0.8, 0.65, 0.5, 0.4, 0.3, 0.22)
GRID = 5  # positions per axis at each scale


def photo_path(package: str, name: str) -> Path:
    return Path(str(resources.files(package).joinpath(name)))


def load_photo(package: str, name: str) -> Image.Image:
    with Image.open(photo_path(package, name)) as im:
        return im.convert("RGB")


def _crop_boxes(width: int, height: int) -> Iterator[tuple[int, int, int, int, bool]]:
    """Boxes (left, top, right, bottom, mirror) in a fixed order: scale, then grid, then flip."""
    short = min(width, height)
    for scale in SCALES:
        side = max(SIZE // 2, int(short * scale))
        xs = np.linspace(0, width - side, GRID if width > side else 1).round().astype(int)
        ys = np.linspace(0, height - side, GRID if height > side else 1).round().astype(int)
        # centre first: the most recognisable crop of each scale comes before the edges
        positions = sorted(
            itertools.product(xs, ys),
            key=lambda p: (abs(p[0] - (width - side) / 2) + abs(p[1] - (height - side) / 2)),
        )
        for mirror in (False, True):
            for x, y in positions:
                yield int(x), int(y), int(x) + side, int(y) + side, mirror


def iter_sample(count: int, photos: tuple[tuple[str, str], ...] = PHOTOS
                ) -> Iterator[tuple[str, Image.Image]]:
    """(name, 64x64 RGB image) pairs, round-robin over `photos` so any prefix is varied."""
    photos = [(Path(name).stem, load_photo(pkg, name)) for pkg, name in photos]

    def stream_of(stem: str, im: Image.Image):
        # a function, not a nested generator expression: that one binds `stem`/`im` late
        # and made every stream crop the last photo
        for box in _crop_boxes(*im.size):
            yield stem, im, box

    streams = [stream_of(stem, im) for stem, im in photos]
    produced = 0
    for round_ in itertools.count():
        alive = False
        for stream in streams:
            item = next(stream, None)
            if item is None:
                continue
            alive = True
            stem, im, (left, top, right, bottom, mirror) = item
            crop = im.crop((left, top, right, bottom)).resize((SIZE, SIZE), Image.BILINEAR)
            if mirror:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            yield f"{stem}_{round_:04d}.png", crop
            produced += 1
            if produced >= count:
                return
        if not alive:
            raise ValueError(f"only {produced} distinct crops available, asked for {count}")


def write_sample(out_dir: str | Path, count: int, per_folder: int = 1000,
                 photos: tuple[tuple[str, str], ...] = PHOTOS) -> list[Path]:
    """Write `count` deterministic 64x64 PNGs of `photos` under `out_dir` (sub-folders of
    `per_folder` files, like a real extracted data set). Existing identical files are left
    alone."""
    out_dir = Path(out_dir)
    paths = []
    for i, (name, image) in enumerate(iter_sample(count, photos)):
        path = out_dir / f"{i // per_folder:03d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            with atomic.atomic_path(path) as tmp:
                image.save(tmp, format="PNG", optimize=False)
        paths.append(path)
    return paths
