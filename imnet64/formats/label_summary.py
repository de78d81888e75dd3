"""The JSON a label shard ends with, typed: its summary (`part-IIIII-of-NNNNN.json`, the
file that marks the shard done) and its timing (`part-IIIII-of-NNNNN.timing.json`).

The summary's bytes depend only on the inputs, the teacher and the options (a re-run writes
the same file); what varies from run to run (seconds, host, Slurm ids) is in the timing.
`to_json` gives the dictionaries `atomic.write_json` writes; `from_json` reads them back.
Names are `image_names.escape_name`d (valid UTF-8) before they get here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from imnet64.formats import provenance
from imnet64.formats.truth_counts import TruthCounts

SUMMARY_FORMAT = "imnet64.label.run-part/1"
TIMING_FORMAT = "imnet64.label.run-timing/1"


@dataclass(frozen=True)
class PartFile:
    """A part file as the summary records it (label-status checks the size)."""

    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Reject:
    path: str  # escaped input name
    reason: str


@dataclass(frozen=True)
class LabelSummary:
    imnet64_version: str
    input: str  # INPUT as given, escaped
    input_kind: str  # folder, list, tar or imagenet64
    shard_index: int
    shard_count: int
    total_inputs: int  # over all shards
    inputs: int  # this shard's
    labeled: int
    rejects: tuple[Reject, ...]
    inputs_sha256: str  # names_fingerprint of this shard's input names
    first_input: str | None
    last_input: str | None
    teacher: str
    teacher_spec: str | None
    num_classes: int
    top_k: int
    batch_size: int
    tfrecord: PartFile
    csv: PartFile
    provenance: Mapping[str, Any] | None  # the stable fields (provenance.stable)
    # the teacher against the inputs' true labels (None: the inputs carried none)
    truth: TruthCounts | None = None
    # the teacher's compute precision, "fp32" or "bf16" (stored probabilities are float32
    # either way); summaries written before --precision existed were fp32
    precision: str = "fp32"

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def to_json(self) -> dict[str, Any]:
        fields = asdict(self)
        for key in ("tfrecord", "csv", "provenance", "truth"):
            del fields[key]
        if self.truth is not None:  # absent when the inputs carry no truth
            fields["truth"] = self.truth.to_json()
        return {
            "format": SUMMARY_FORMAT,
            **fields,
            "rejected": self.rejected,
            "rejects": [asdict(r) for r in self.rejects],
            "files": {"tfrecord": asdict(self.tfrecord), "csv": asdict(self.csv)},
            provenance.KEY: dict(self.provenance) if self.provenance is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabelSummary:
        """Raises KeyError, TypeError or ValueError for what is not a summary."""
        if data["format"] != SUMMARY_FORMAT:
            raise ValueError(f"not a label summary: format {data['format']!r}")
        files = data["files"]
        return cls(
            **{k: data[k] for k in (
                "imnet64_version", "input", "input_kind", "shard_index", "shard_count",
                "total_inputs", "inputs", "labeled", "inputs_sha256", "first_input",
                "last_input", "teacher", "teacher_spec", "num_classes", "top_k", "batch_size")},
            precision=data.get("precision", "fp32"),
            rejects=tuple(Reject(r["path"], r["reason"]) for r in data["rejects"]),
            tfrecord=PartFile(**files["tfrecord"]),
            csv=PartFile(**files["csv"]),
            provenance=data.get(provenance.KEY),
            truth=TruthCounts.from_json(data["truth"]) if data.get("truth") else None,
        )


@dataclass(frozen=True)
class SummaryFiles:
    tfrecord: PartFile
    csv: PartFile


@dataclass(frozen=True)
class SummaryContract:
    """The summary's JSON as `LabelSummary.to_json` writes it: what every reader checks
    (imnet64.formats.read_back) before trusting a field."""

    format: str
    imnet64_version: str
    input: str
    input_kind: str
    shard_index: int
    shard_count: int
    total_inputs: int
    inputs: int
    labeled: int
    rejected: int
    rejects: list[Reject]
    inputs_sha256: str
    first_input: str | None
    last_input: str | None
    teacher: str
    teacher_spec: str | None
    num_classes: int
    top_k: int
    batch_size: int
    files: SummaryFiles
    provenance: dict[str, Any] | None = None


@dataclass(frozen=True)
class TimingContract:
    """The timing's JSON as `LabelTiming.to_json` writes it."""

    format: str
    inputs_sha256: str
    seconds: float
    images_per_second: float | None
    provenance: dict[str, Any] | None = None


@dataclass(frozen=True)
class LabelTiming:
    inputs_sha256: str  # ties it to the summary of the same inputs
    seconds: float
    images_per_second: float | None
    provenance: Mapping[str, Any] | None  # the run fields (provenance.run_part)
    # why the summary's precision: "as asked", or what --precision auto found on this host
    precision_choice: str | None = None

    @classmethod
    def measured(cls, inputs_sha256: str, images: int, seconds: float,
                 run_fields: Mapping[str, Any], precision_choice: str | None = None
                 ) -> LabelTiming:
        return cls(inputs_sha256, round(seconds, 3),
                   round(images / seconds, 2) if seconds > 0 else None, run_fields,
                   precision_choice)

    def to_json(self) -> dict[str, Any]:
        return {"format": TIMING_FORMAT, **asdict(self),
                provenance.KEY: dict(self.provenance) if self.provenance is not None else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabelTiming:
        if data["format"] != TIMING_FORMAT:
            raise ValueError(f"not a label timing: format {data['format']!r}")
        return cls(data["inputs_sha256"], data["seconds"], data["images_per_second"],
                   data.get(provenance.KEY), data.get("precision_choice"))
