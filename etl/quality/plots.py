"""Static plots for the data-quality report: matplotlib figures rendered to SVG text.

Everything here is deterministic and needs nothing from the network: the Agg backend, the DejaVu
font bundled with matplotlib, text drawn as paths (so the page needs no font at all), a fixed
hash salt for the ids matplotlib generates and no date in the metadata. Rendering the same data
twice gives the same bytes, so a report can be diffed between runs.

The SVG returned starts at `<svg` (no XML prolog) so it can be inlined in an HTML page, and every
id in it carries a prefix: several plots on one page never share an id.
"""

from __future__ import annotations

import io
import math
import re
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # batch rendering only; no display, no GUI toolkit

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from etl.quality.results import CoveragePoint, Histogram

BAR_COLOUR = "#4c72b0"
AESTHETIC_COLOUR = "#8c3fa8"
IMAGE_COLOUR = "#2a8c6a"
INK = "#24292f"
GRID = "#d0d7de"

_RC = {
    "svg.fonttype": "path",  # glyphs as paths: the page needs no font
    "svg.hashsalt": "laion-etl-report",  # stable generated ids
    "svg.image_inline": True,
    "font.family": "DejaVu Sans",  # bundled with matplotlib
    "font.size": 9,
    "axes.edgecolor": "#57606a",
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": "#57606a",
    "ytick.color": "#57606a",
    "text.color": INK,
    "path.simplify": False,
}
_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}  # no <metadata> at all


def histogram_svg(hist: Histogram, *, id_prefix: str = "hist", width: float = 5.2,
                  height: float = 2.6) -> str:
    """A bar chart of `hist` (equal or unequal bins); the title says how many values were null."""
    bins, counts = [float(b) for b in hist.bins], [int(c) for c in hist.counts]
    if len(bins) != len(counts) + 1:
        raise ValueError(f"histogram {hist.column}: {len(bins)} bin edges for {len(counts)} counts")
    total = sum(counts)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height))
        ax = fig.add_subplot()
        if counts:
            ax.stairs(counts, bins, fill=True, color=BAR_COLOUR, alpha=0.85)
            ax.stairs(counts, bins, color="#2f4b7c", linewidth=0.8)
            ax.set_xlim(bins[0], bins[-1])
        else:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center",
                    color="#57606a")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(_count_label))
        ax.grid(axis="y", color=GRID, linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlabel(_plain(hist.column))
        ax.set_ylabel("rows")
        values = "value" if total == 1 else "values"
        ax.set_title(_plain(f"{hist.column}: {total:,} {values}, {hist.nulls:,} null"), loc="left")
        fig.tight_layout()
        return _svg(fig, id_prefix)


def coverage_svg(points: Sequence[CoveragePoint], *, id_prefix: str = "coverage",
                 width: float = 7.2, height: float = 2.8) -> str:
    """Share of wide-table rows with an aesthetic score and with an image, one point per run
    in the order given (oldest first); the last point is the run being reported.

    Nothing is drawn over the data or over another label: the legend sits right of the plot area,
    and with many runs the x labels are thinned (the latest run always keeps its label).
    Groups carry stable ids for checks of the drawn page: `line-aesthetic`, `line-image`, `legend`,
    `xlabel-<index>` (prefixed like every id)."""
    if not points:
        raise ValueError("coverage plot needs at least one run")
    xs = list(range(len(points)))
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height))
        ax = fig.add_subplot()
        aesthetic, = ax.plot(xs, [p.aesthetic_share for p in points], marker="o", markersize=4, linewidth=1.6,
                             color=AESTHETIC_COLOUR, label="with an aesthetic score")
        image, = ax.plot(xs, [p.image_share for p in points], marker="s", markersize=4, linewidth=1.6,
                         color=IMAGE_COLOUR, label="with an image")
        aesthetic.set_gid("line-aesthetic")
        image.set_gid("line-image")
        ax.set_xticks(xs, [_plain(run_label(p)) for p in points])
        ax.set_xlim(-0.5, len(points) - 0.5)
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.grid(axis="y", color=GRID, linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_ylabel("share of rows")
        ax.set_title("coverage of the wide table over the last runs", loc="left")
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False, fontsize=8)
        legend.set_gid("legend")
        labels = [tick.label1 for tick in ax.xaxis.get_major_ticks()]
        for index, label in enumerate(labels):
            label.set_gid(f"xlabel-{index}")
        _thin_x_labels(fig, ax, labels)
        return _svg(fig, id_prefix)


LABEL_GAP = 6  # pixels (at the figure's 100 dpi) kept free between two x labels


def _thin_x_labels(fig: Figure, ax, labels: list) -> None:
    """Keep every k-th x label, counted back from the latest run, for the smallest k at which no two
    kept labels overlap (measured as laid out); the ticks stay on every run."""
    step = 1
    while True:
        for index, label in enumerate(labels):
            label.set_visible((len(labels) - 1 - index) % step == 0)
        fig.tight_layout()
        fig.draw_without_rendering()
        boxes = [label.get_window_extent().padded(LABEL_GAP / 2) for label in labels if label.get_visible()]
        if step >= len(labels) or not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])):
            return
        # the next k to try: as many runs as the widest label spans (one layout per try is the cost)
        run_width = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]
        step = max(step + 1, math.ceil(max(box.width for box in boxes) / run_width))


def run_label(point: CoveragePoint) -> str:
    """Two short lines for an axis: when the run finished (to the minute) and a short run id.

    Run ids are `<UTC start time>-<random hex>` (etl.build.runs.new_run_id): the time is on the first
    line already, so the short id is the random tail."""
    when = (point.finished_at or "").replace("T", " ")[:16]
    head, _, tail = point.run_id.rpartition("-")
    short = tail if head and 0 < len(tail) <= 12 else point.run_id[-8:]
    return f"{when}\n{short}" if when else short


def _count_label(value: float, _pos=None) -> str:
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def _plain(text: str) -> str:
    """Text shown literally: a `$` would otherwise start matplotlib's math mode."""
    return str(text).replace("$", r"\$")


_ID = re.compile(r'(?<![\w-])id="([^"]+)"')


def _svg(fig: Figure, id_prefix: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=_METADATA)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop <?xml ...?> and <!DOCTYPE ...>: inlined in HTML
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)  # matplotlib's comments repeat the text
    # matplotlib's stylesheet selects `*`: inlined in a page it would apply to every element
    text = text.replace('<style type="text/css">*{', '<style type="text/css">svg *{', 1)
    return _prefix_ids(text, _safe_id(id_prefix))


def _prefix_ids(svg: str, prefix: str) -> str:
    """Make every id unique on a page holding several plots, and its references with it."""
    ids = set(_ID.findall(svg))
    if not ids:
        return svg

    def rename(match: re.Match) -> str:
        name = match.group(2)
        return f"{match.group(1)}{prefix}-{name}" if name in ids else match.group(0)

    svg = re.sub(r'((?<![\w-])id=")([^"]+)(?=")', rename, svg)
    svg = re.sub(r'(href="#)([^"]+)(?=")', rename, svg)
    return re.sub(r"(url\(#)([^)]+)(?=\))", rename, svg)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "plot"
