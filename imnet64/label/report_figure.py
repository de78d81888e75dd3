"""The label report's picture: one row per shown teacher class (its name, count, share of
low-confidence labels and, with true labels, the teacher's accuracy; a sample of its images,
each with the teacher's confidence, red below the threshold; its confidence histogram), a
header with the run's totals and overall histogram, and with true labels the teacher's most
common confusions. matplotlib's object API (no pyplot state)."""

from __future__ import annotations

from pathlib import Path

from imnet64 import atomic
from imnet64.label.report_data import BINS, ClassStats, ReportData

LOW = "#c0392b"  # low confidence
OK = "#1e6b3a"
BAR = "#4a78a8"
CELL = 0.78  # inches per image tile


def _pct(n: int, of: int) -> str:
    return f"{100 * n / of:.1f}%" if of else "-"


def _class_text(c: ClassStats, total: int, threshold: float) -> str:
    lines = [f"{c.count:,} images ({_pct(c.count, total)})",
             f"conf < {threshold:g}: {_pct(c.low, c.count)}"]
    if c.accuracy is not None:
        lines.append(f"right vs truth: {100 * c.accuracy:.0f}% of {c.truth_known:,}")
    return "\n".join(lines)


def _histogram(ax, hist, threshold: float, color: str = BAR) -> None:
    share = hist / max(int(hist.sum()), 1)
    ax.bar(BINS[:-1], share, width=BINS[1] - BINS[0], align="edge", color=color)
    ax.axvline(threshold, color=LOW, linewidth=1, linestyle="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(float(share.max()), 1e-9) * 1.1)
    ax.set_yticks([])
    ax.tick_params(labelsize=7, length=2, pad=1)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def draw(data: ReportData, per_class: int):
    """The report as a matplotlib Figure."""
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

    rows = max(len(data.shown), 1)
    confusion_lines = len(data.confusions) + 1 if data.confusions else 0
    header_h, row_h = (2.05 if data.accuracy is not None else 1.8), CELL + 0.32
    footer_h = 0.25 + 0.17 * confusion_lines
    width = 2.3 + per_class * CELL + 2.1
    height = header_h + rows * row_h + footer_h
    fig = Figure(figsize=(width, height), dpi=100, facecolor="white")
    grid = GridSpec(rows, per_class + 2, figure=fig,
                    width_ratios=[2.3 / CELL] + [1] * per_class + [2.1 / CELL],
                    left=0.01, right=0.99, wspace=0.06, hspace=0.42,
                    top=1 - header_h / height, bottom=footer_h / height)

    total = data.labeled
    if data.dataset:
        which = (f"rows: the {len(data.shown)} most frequent of the {data.kept_classes} classes "
                 f"kept in {data.dataset}")
    else:
        which = (f"rows: the {len(data.shown)} most frequent teacher classes "
                 f"({_pct(sum(c.count for c in data.shown), total)} of all labels)")
    lines = [
        (f"{data.labeled:,} labeled + {data.rejected:,} rejected in {data.shards} shard(s); "
         f"{data.distinct_classes} distinct teacher classes", "black", "normal"),
        (f"top-1 confidence < {data.low_confidence:g}: {_pct(data.low, total)} of all labels",
         LOW, "normal"),
        (which, "#444444", "normal"),
        (f"{per_class} images per class, a fixed random sample; number = teacher confidence",
         "#444444", "normal"),
    ]
    if data.accuracy is not None:
        lines.append((f"against the true labels: the teacher is right on "
                      f"{100 * data.accuracy:.1f}% of {data.truth_known:,} images that carry "
                      "one", "black", "bold"))
    fig.text(0.01, 1 - 0.25 / height, f"Teacher labels of {data.out_dir}", fontsize=13,
             weight="bold", va="top")
    for i, (text, color, weight) in enumerate(lines):
        fig.text(0.01, 1 - (0.6 + 0.22 * i) / height, text, fontsize=9, va="top", color=color,
                 weight=weight)
    overall = fig.add_axes((1 - 2.0 / width, 1 - 1.45 / height, 1.85 / width, 0.8 / height))
    _histogram(overall, data.hist, data.low_confidence, color="#7f7f7f")
    overall.set_title("confidence, all labels", fontsize=8, pad=2)

    for r, c in enumerate(data.shown):
        label = fig.add_subplot(grid[r, 0])
        label.axis("off")
        label.text(0, 0.95, c.name, fontsize=10, weight="bold", va="top",
                   transform=label.transAxes, wrap=True)
        label.text(0, 0.55, _class_text(c, total, data.low_confidence), fontsize=7.5,
                   va="top", transform=label.transAxes, color="#333333")
        samples = data.samples.get(c.teacher_id, [])
        for i in range(per_class):
            ax = fig.add_subplot(grid[r, 1 + i])
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i >= len(samples) or samples[i].image is None:
                continue
            s = samples[i]
            ax.imshow(s.image, interpolation="nearest")
            low = s.confidence < data.low_confidence
            caption = f"{s.confidence:.2f}"
            if s.truth is not None and s.truth != c.teacher_id:
                caption += " \u2717"  # the truth says otherwise
            ax.set_xlabel(caption, fontsize=7.5, labelpad=1, color=LOW if low else OK)
        _histogram(fig.add_subplot(grid[r, per_class + 1]), c.hist, data.low_confidence)

    if data.confusions:
        y = (footer_h - 0.12) / height
        fig.text(0.01, y, "most common confusions (teacher said -> truth is): count",
                 fontsize=9, weight="bold", va="top")
        for i, m in enumerate(data.confusions, 1):
            fig.text(0.02, y - i * 0.17 / height,
                     f"{m.teacher_name} -> {m.truth_name}: {m.count:,}", fontsize=8, va="top")
    return fig


def write_png(data: ReportData, per_class: int, path: str | Path) -> Path:
    """Draw and write the PNG atomically."""
    path = Path(path)
    fig = draw(data, per_class)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=100)
    return path
