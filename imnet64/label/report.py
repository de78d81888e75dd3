"""`imnet64 label-report OUT_DIR`: look at what the teacher did before training on it.

A PNG (and its figures as JSON beside it): for the most frequent teacher classes, or the
classes a dataset kept, a deterministic sample of images with the teacher's confidence, a
confidence histogram per class and the share of low-confidence labels; where the label parts
carry true labels (CSV column `truth`), the teacher's accuracy per class and its most common
confusions. Reads the part CSVs once and then only the shown records (report_data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imnet64 import atomic
from imnet64.errors import UserError
from imnet64.label.report_data import ReportData, ReportOptions, collect, read_images
from imnet64.label.report_figure import write_png

REPORT_NAME = "label-report.png"  # default: OUT_DIR/label-report.png


@dataclass(frozen=True)
class LabelReport:
    png: Path
    json: Path
    data: ReportData


def write_report(out_dir: str | Path, options: ReportOptions | None = None,
                 dataset: str | Path | None = None, png: str | Path | None = None
                 ) -> LabelReport:
    """Write the report of label OUT_DIR to `png` (default OUT_DIR/label-report.png) and
    its figures to the same name with .json."""
    options = options or ReportOptions()
    if options.classes < 1 or options.per_class < 1:
        raise UserError("--classes and --per-class must be at least 1")
    if not 0 < options.low_confidence <= 1:
        raise UserError(f"--low-confidence must be in (0, 1] (got {options.low_confidence:g})")
    png = Path(png) if png is not None else Path(out_dir) / REPORT_NAME
    if png.suffix.lower() != ".png":
        raise UserError(f"the report is a PNG: {png} must end in .png")
    data = read_images(collect(out_dir, options, dataset))
    write_png(data, options.per_class, png)
    json_path = png.with_suffix(".json")
    atomic.write_json(json_path, data.to_json())
    return LabelReport(png, json_path, data)
