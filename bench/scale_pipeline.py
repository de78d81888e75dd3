"""The records input pipeline alone, one pass over a split: what bench/scale.py runs as its
`input-pipeline` stage (a process of its own, like the CLI stages).

    .venv/bin/python bench/scale_pipeline.py DATASET_DIR [--split train] [--batch-size 32]

Reads with training's options (shuffle, soft labels) but without repeat, so every example is
seen once. Prints `first batch after S s` as soon as the first batch is out (the stage's time
to first image) and a last line of JSON: {"images": n, "seconds": s}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.formats.manifest import load_manifest
from imnet64.train.input_pipeline import InputOptions, records_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    start = time.monotonic()
    manifest = load_manifest(args.dataset)
    options = InputOptions(repeat=False, drop_remainder=False, with_soft_labels=True)
    images = 0
    for batch in records_dataset(manifest, args.split, args.batch_size, options):
        if not images:
            print(f"first batch after {time.monotonic() - start:.2f} s", file=sys.stderr,
                  flush=True)
        images += int(batch[0].shape[0])
    print(json.dumps({"images": images, "seconds": round(time.monotonic() - start, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
