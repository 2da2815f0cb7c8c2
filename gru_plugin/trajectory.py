"""Unlearning paths: model_utility compared at one matched forget_quality.

Endpoints alone favour whichever run unlearned further; a method's variants are
compared fairly only where they reach the same forget_quality. Each run is
evaluated at several checkpoints, laid out as

    <root>/<label>/seed<N>/step<S>/TOFU_SUMMARY.json

with step 0 the target model before unlearning. ``label`` is ``<method>`` for the
base run or ``<method>_<variant>`` (``GradDiff_GRU``, ``RMU_GRU-host``); the method
is the label without the report's ``GRU_SUFFIX``, as the report pairs them.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gru_plugin.report import GRU_SUFFIX, SEED_DIR, _pyplot

SUMMARY = "TOFU_SUMMARY.json"
STEP_DIR = re.compile(r"step[_-]?(\d+)", re.IGNORECASE)
BASE = "base"
LOWEST_LOG = -300.0
"""log10 of a forget_quality of 0: a KS p-value can underflow."""


@dataclass(frozen=True)
class Point:
    """One evaluated checkpoint of a run."""

    step: int
    forget_quality: float
    model_utility: float
    metrics: dict[str, float]


Trajectory = list[Point]
"""The points of one (label, seed) run, ordered by step."""
Runs = dict[int, Trajectory]
"""seed → its trajectory."""


def _point(step: int, file: Path) -> Point:
    summary = json.loads(file.read_text())
    metrics = {
        key: float(value)
        for key, value in summary.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    missing = {"forget_quality", "model_utility"} - metrics.keys()
    if missing:
        raise ValueError(f"{file}: no {', '.join(sorted(missing))}")
    return Point(step, metrics["forget_quality"], metrics["model_utility"], metrics)


def load_paths(root: Path) -> dict[str, Runs]:
    """label → seed → points by step."""
    paths: dict[str, Runs] = {}
    for file in sorted(Path(root).glob(f"*/*/*/{SUMMARY}")):
        seed = SEED_DIR.fullmatch(file.parents[1].name)
        step = STEP_DIR.fullmatch(file.parent.name)
        if seed and step:
            runs = paths.setdefault(file.parents[2].name, {})
            runs.setdefault(int(seed[1]), []).append(_point(int(step[1]), file))
    for label, runs in paths.items():
        for points in runs.values():
            points.sort(key=lambda point: point.step)
        paths[label] = dict(sorted(runs.items()))
    return dict(sorted(paths.items()))


def method_of(label: str) -> tuple[str, str]:
    """``(method, variant)``: ``GradDiff_GRU-forget`` → ``(GradDiff, GRU-forget)``;
    the base is what the report pairs the label with (``GRU_SUFFIX`` dropped)."""
    method = GRU_SUFFIX.sub("", label)
    return method, label[len(method) + 1 :] if label != method else BASE


def _log(quality: float) -> float:
    return math.log10(quality) if quality > 0 else LOWEST_LOG


def utility_at_quality(path: Trajectory, quality: float) -> float | None:
    """model_utility where the path first reaches ``quality``, from step 0 on.

    Interpolated linearly in log10 forget_quality, the scale a p-value moves on;
    None if the path never gets there.
    """
    level = _log(quality)
    previous: Point | None = None
    for point in path:
        x = _log(point.forget_quality)
        if x == level:
            return point.model_utility
        if previous is not None:
            x0 = _log(previous.forget_quality)
            if min(x0, x) < level < max(x0, x):
                u0, u = previous.model_utility, point.model_utility
                return u0 + (level - x0) / (x - x0) * (u - u0)
        previous = point
    return None


def matched_quality(paths: Iterable[Trajectory]) -> float | None:
    """The highest forget_quality every path reaches: the min of their maxima."""
    peaks = [max(point.forget_quality for point in path) for path in paths if path]
    return min(peaks) if peaks else None


def stalled(path: Trajectory) -> bool:
    """Whether the path never rose above where it started: then the matched level
    is its start and every run's utility there is the target's."""
    return all(point.forget_quality <= path[0].forget_quality for point in path)


@dataclass(frozen=True)
class Stats:
    """model_utility at the matched level over the ``seeds`` that reach it."""

    label: str
    variant: str
    mean: float | None
    std: float | None
    seeds: int


@dataclass(frozen=True)
class Comparison:
    """One method: its matched forget_quality and each label's utility there."""

    method: str
    level: float
    stats: list[Stats]
    stalled: bool = False
    """Some run never raised forget_quality above its start: nothing to compare."""

    @property
    def base(self) -> Stats | None:
        return next((s for s in self.stats if s.variant == BASE), None)


STALLED = "a run never raised forget_quality above its start: no verdict"


def verdict(base: Stats, other: Stats) -> str:
    """Call a difference only when it exceeds the larger seed spread of the two."""
    if base.mean is None or other.mean is None:
        return "level not reached: no verdict"
    if base.std is None or other.std is None:
        return "one seed: no verdict"
    difference = other.mean - base.mean
    if abs(difference) <= max(base.std, other.std):
        return "inside the seed spread: no verdict"
    side = "higher" if difference > 0 else "lower"
    return f"{side} utility at matched forget quality"


def _stats(label: str, runs: Runs, level: float) -> Stats:
    found = [utility_at_quality(path, level) for path in runs.values()]
    values = [value for value in found if value is not None]
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stats(label, method_of(label)[1], mean, std, len(values))


def _by_method(paths_by_label: dict[str, Runs]) -> dict[str, dict[str, Runs]]:
    """method → label → runs; sorting puts the base label, a prefix, first."""
    methods: dict[str, dict[str, Runs]] = {}
    for label in sorted(paths_by_label):
        methods.setdefault(method_of(label)[0], {})[label] = paths_by_label[label]
    return dict(sorted(methods.items()))


def compare(paths_by_label: dict[str, Runs]) -> list[Comparison]:
    """Per method, every label's utility at the level all its runs reach."""
    comparisons = []
    for method, labels in _by_method(paths_by_label).items():
        paths = [path for runs in labels.values() for path in runs.values() if path]
        level = matched_quality(paths)
        if level is not None:
            stats = [_stats(label, runs, level) for label, runs in labels.items()]
            stuck = any(stalled(path) for path in paths)
            comparisons.append(Comparison(method, level, stats, stuck))
    return comparisons


def _cell(stats: Stats | None) -> str:
    if stats is None or stats.mean is None:
        return "–"
    spread = "" if stats.std is None else f" ± {stats.std:.3f}"
    seeds = f"{stats.seeds} seed" + ("s" if stats.seeds > 1 else "")
    return f"{stats.mean:.3f}{spread} ({seeds})"


def _delta(base: Stats | None, stats: Stats | None) -> str:
    if base is None or stats is None or None in (base.mean, stats.mean):
        return "–"
    return f"{stats.mean - base.mean:+.3f}"


def markdown(comparisons: Iterable[Comparison]) -> str:
    """One table row per method, then a verdict line per variant against base."""
    comparisons = list(comparisons)
    variants = sorted(
        {s.variant for c in comparisons for s in c.stats}, key=lambda v: (v != BASE, v)
    )
    head = ["method", "matched forget_quality"]
    for variant in variants:
        head += [variant] if variant == BASE else [variant, f"Δ {variant}"]
    lines = [
        "model_utility at the matched forget_quality: mean ± std (n seeds);"
        " Δ = mean − base mean.",
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    verdicts = []
    for comparison in comparisons:
        by_variant = {s.variant: s for s in comparison.stats}
        base = comparison.base
        row = [comparison.method, f"{comparison.level:.2e}"]
        for variant in variants:
            stats = by_variant.get(variant)
            row.append(_cell(stats))
            if variant == BASE:
                continue
            row.append(_delta(base, stats))
            if stats and base:
                said = STALLED if comparison.stalled else verdict(base, stats)
                verdicts.append(f"- {stats.label} vs {base.label}: {said}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join([*lines, "", *verdicts, ""])


def write_paths_csv(paths_by_label: dict[str, Runs], path: Path) -> None:
    """Every evaluated point, a row each: what paths.png draws, as numbers."""
    metrics = sorted(
        {
            key
            for runs in paths_by_label.values()
            for points in runs.values()
            for point in points
            for key in point.metrics
        }
    )
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "method", "variant", "seed", "step", *metrics])
        for label, runs in paths_by_label.items():
            method, variant = method_of(label)
            for seed, points in runs.items():
                for point in points:
                    values = [point.metrics.get(key, "") for key in metrics]
                    writer.writerow([label, method, variant, seed, point.step, *values])


def plot_paths(
    paths_by_label: dict[str, Runs], comparisons: Iterable[Comparison], path: Path
) -> None:
    """Each run's path in (model_utility, forget_quality), one panel per method."""
    plt = _pyplot()
    methods = _by_method(paths_by_label)
    levels = {c.method: c.level for c in comparisons}
    cols = min(len(methods), 3) or 1
    rows = max(math.ceil(len(methods) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    for ax, (method, labels) in zip(axes.flat, methods.items(), strict=False):
        for index, (label, runs) in enumerate(labels.items()):
            for seed, points in enumerate(runs.values()):
                utility = [point.model_utility for point in points]
                quality = [point.forget_quality for point in points]
                name = label if seed == 0 else None
                style = {"color": f"C{index % 10}", "lw": 0.8, "ms": 3}
                ax.plot(utility, quality, "o-", label=name, **style)
        if method in levels:
            ax.axhline(levels[method], color="black", linestyle=":", linewidth=1)
        ax.set(title=method, yscale="log", xlabel="model_utility")
        ax.set_ylabel("forget_quality (log; dotted: matched level)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(methods) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
