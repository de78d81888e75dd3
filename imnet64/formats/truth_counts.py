"""The teacher's hits against the true labels, counted where the inputs carry them.

Summaries (label parts, label-status) keep counts, not rates, so shards add up exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TOP5 = 5


@dataclass
class TruthCounts:
    known: int = 0  # images with a true label
    top1: int = 0  # ... whose teacher top-1 is it
    top5: int | None = 0  # ... whose teacher top-5 holds it (None: fewer than 5 ids kept)

    def add(self, truth: int | None, topk_ids: Sequence[int]) -> None:
        if truth is None:
            return
        self.known += 1
        self.top1 += int(topk_ids[0] == truth)
        if self.top5 is not None:
            if len(topk_ids) < TOP5:
                self.top5 = None
            else:
                self.top5 += int(truth in topk_ids[:TOP5])

    def to_json(self) -> dict[str, Any]:
        return {"known": self.known, "teacher_top1": self.top1, "teacher_top5": self.top5}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TruthCounts:
        return cls(int(data["known"]), int(data["teacher_top1"]),
                   None if data.get("teacher_top5") is None else int(data["teacher_top5"]))

    @classmethod
    def total(cls, parts: Iterable[TruthCounts]) -> TruthCounts:
        out = cls()
        for p in parts:
            out.known += p.known
            out.top1 += p.top1
            out.top5 = None if out.top5 is None or p.top5 is None else out.top5 + p.top5
        return out

    def rates(self) -> tuple[float | None, float | None]:
        """(top-1, top-5) as fractions of `known` (None when unknown)."""
        if not self.known:
            return None, None
        return (self.top1 / self.known,
                None if self.top5 is None else self.top5 / self.known)

    def describe(self, who: str = "teacher") -> str:
        top1, top5 = self.rates()
        if top1 is None:
            return "no true labels"
        text = f"{who} vs truth on {self.known} images: top-1 {top1:.4f}"
        return text + (f", top-5 {top5:.4f}" if top5 is not None else "")
