"""shard-records' catalog: the per-record cost every rank pays over every label part.

Every rank of `shard-records` reads the whole catalog (one entry per labeled image) to
compute the same plan, so its cost per record times 1.28 M is start-up time on every rank
(bench/scale.py: shard-records' time to its first image grew from 4.7 s at 10 k to 13.6 s
at 160 k). This measures, side by side in one process over the records of LABEL_DIR's
parts, the catalog entry built from the full parse (`parse_labeled`, what the scan did
before) and from the lean one (`catalog_fields`), alternating for --rounds rounds, and the
whole scan (`scan_source`) once.

    .venv/bin/python bench/catalog_scan.py LABEL_DIR [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.cluster.machine import machine_line
from imnet64.formats.tfrecord_file import iter_records
from imnet64.formats.tfrecord_schema import catalog_fields, parse_labeled
from imnet64.records.source import SourceItem, scan_source

FULL = 1_281_167


def full_parse(records: list[tuple[int, bytes]]) -> list[SourceItem]:
    out = []
    for offset, data in records:
        item = parse_labeled(data)
        out.append(SourceItem(item.filename, item.label, item.confidence, 0, offset,
                              len(item.encoded), -1 if item.truth is None else item.truth))
    return out


def lean_parse(records: list[tuple[int, bytes]]) -> list[SourceItem]:
    out = []
    for offset, data in records:
        filename, label, _name, confidence, size, truth = catalog_fields(data)
        out.append(SourceItem(filename, label, confidence, 0, offset, size, truth))
    return out


def cpu_us_per_record(fn, records) -> tuple[float, list[SourceItem]]:
    start = time.process_time()
    items = fn(records)
    return 1e6 * (time.process_time() - start) / len(records), items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    print(f"machine: {machine_line()}", flush=True)
    parts = sorted((args.label_dir / "labels").glob("part-*.tfrecord"))
    records = [r for p in parts for r in iter_records(p)]
    times: dict[str, list[float]] = {"full": [], "lean": []}
    for _ in range(args.rounds):
        for name, fn in (("full", full_parse), ("lean", lean_parse)):
            us, items = cpu_us_per_record(fn, records)
            times[name].append(us)
        if [i[:3] + i[4:] for i in full_parse(records[:1000])] != \
                [i[:3] + i[4:] for i in lean_parse(records[:1000])]:
            print("the two parses disagree", file=sys.stderr)
            return 1
    start, wall = time.process_time(), time.monotonic()
    scanned = scan_source(args.label_dir, False)
    scan_us = 1e6 * (time.process_time() - start) / len(scanned.items)
    result = {"machine": machine_line(), "records": len(records),
              "full_us_per_record": [round(t, 2) for t in times["full"]],
              "lean_us_per_record": [round(t, 2) for t in times["lean"]],
              "full_over_lean": round(statistics.median(times["full"])
                                      / statistics.median(times["lean"]), 2),
              "scan_cpu_us_per_record": round(scan_us, 1),
              "scan_wall_s": round(time.monotonic() - wall, 2),
              "saved_per_rank_at_full_s": round(
                  (statistics.median(times["full"]) - statistics.median(times["lean"]))
                  * FULL / 1e6, 1)}
    print(f"{len(records):,} records; catalog entry, CPU us per record (median of "
          f"{args.rounds}): full parse {statistics.median(times['full']):.1f}, lean "
          f"{statistics.median(times['lean']):.1f} ({result['full_over_lean']}x); saved per "
          f"rank at {FULL:,} images: {result['saved_per_rank_at_full_s']} s; the whole scan "
          f"now: {scan_us:.1f} CPU us per record ({result['scan_wall_s']} s wall, TensorFlow's "
          "import included)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
