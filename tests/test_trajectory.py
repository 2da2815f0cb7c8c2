"""Unlearning paths compared at a matched forget_quality, on small fixture evals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gru_plugin.trajectory import (
    Point,
    Stats,
    compare,
    load_paths,
    markdown,
    matched_quality,
    method_of,
    plot_paths,
    utility_at_quality,
    verdict,
)

TARGET = (0, 1e-6, 0.6)
"""step 0 of every run: the target model, (step, forget_quality, model_utility)."""

RUNS = {
    # At 1e-3: 0.40 and 0.44, mean 0.42, std 0.04 / sqrt(2) = 0.0283.
    ("GradDiff", 0): [TARGET, (5, 1e-4, 0.5), (10, 1e-2, 0.3)],
    ("GradDiff", 1): [TARGET, (5, 1e-3, 0.44), (10, 1e-1, 0.2)],
    # Peaks at 1e-3, the lowest peak: the matched level. 0.50 and 0.50.
    ("GradDiff_GRU", 0): [TARGET, (5, 1e-5, 0.55), (10, 1e-3, 0.5)],
    ("GradDiff_GRU", 1): [TARGET, (5, 1e-4, 0.52), (10, 1e-2, 0.48)],
    # -6 → -2 in log10: -3 is 3/4 of the way, 0.6 - 0.75 * 0.3 = 0.375.
    ("GradDiff_GRU-forget", 0): [TARGET, (5, 1e-2, 0.3)],
    # RMU's level is 1e-4: RMU halfway from -6 to -2, 0.55; the variant 0.56.
    ("RMU", 0): [TARGET, (5, 1e-2, 0.5)],
    ("RMU_GRU-host", 0): [TARGET, (5, 1e-4, 0.56)],
}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def summary(step: int, quality: float, utility: float) -> dict:
    return {"forget_quality": quality, "model_utility": utility, "step": step}


def write_runs(root: Path, runs: dict) -> Path:
    """``runs`` as ``<label>/seed<N>/step<S>/TOFU_SUMMARY.json`` under ``root``."""
    for (label, seed), points in runs.items():
        for step, quality, utility in points:
            file = root / label / f"seed{seed}" / f"step{step}" / "TOFU_SUMMARY.json"
            write_json(file, summary(step, quality, utility))
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_runs(tmp_path, RUNS)


def path_of(*points: tuple[float, float]) -> list[Point]:
    """A path from (forget_quality, model_utility) pairs, steps 0, 1, ..."""
    return [Point(step, q, u, {}) for step, (q, u) in enumerate(points)]


def test_interpolates_linearly_in_log_forget_quality() -> None:
    path = path_of((1e-4, 0.5), (1e-2, 0.3))
    assert utility_at_quality(path, 1e-3) == pytest.approx(0.4, abs=1e-12)
    # A quarter of the way in log10 (1e-4 → 1e-2) is 10**-3.5, not 1e-4 + 1e-2/4.
    assert utility_at_quality(path, 10**-3.5) == pytest.approx(0.45, abs=1e-12)
    downward = path_of((1e-2, 0.3), (1e-4, 0.5))
    assert utility_at_quality(downward, 1e-3) == pytest.approx(0.4, abs=1e-12)


def test_first_crossing_wins() -> None:
    # Up through 1e-3 (at 0.4), back down through it (at 0.6): the first counts.
    path = path_of((1e-4, 0.5), (1e-2, 0.3), (1e-4, 0.9))
    assert utility_at_quality(path, 1e-3) == pytest.approx(0.4, abs=1e-12)


def test_touching_the_level_returns_that_points_utility() -> None:
    path = path_of((1e-4, 0.5), (1e-3, 0.45), (1e-5, 0.2), (1e-1, 0.1))
    assert utility_at_quality(path, 1e-3) == 0.45
    assert utility_at_quality(path, 1e-4) == 0.5  # step 0 itself


def test_a_level_never_reached_is_none() -> None:
    path = path_of((1e-4, 0.5), (1e-3, 0.45))
    assert utility_at_quality(path, 1e-2) is None
    assert utility_at_quality(path, 1e-5) is None
    assert utility_at_quality([], 1e-3) is None


def test_matched_quality_is_the_lowest_peak() -> None:
    paths = [
        path_of((1e-6, 0.6), (1e-2, 0.3), (1e-4, 0.2)),
        path_of((1e-6, 0.6), (1e-3, 0.5)),
        path_of((1e-6, 0.6), (5e-2, 0.1)),
    ]
    assert matched_quality(paths) == 1e-3
    assert matched_quality([]) is None


def test_method_and_variant_from_label() -> None:
    assert method_of("GradDiff") == ("GradDiff", "base")
    assert method_of("GradDiff_GRU") == ("GradDiff", "GRU")
    assert method_of("GradDiff_GRU-forget") == ("GradDiff", "GRU-forget")
    assert method_of("RMU_GRU-host") == ("RMU", "GRU-host")


def test_load_paths_orders_steps_and_parses_labels_and_seeds(tmp_path: Path) -> None:
    run = tmp_path / "NPO_GRU" / "seed3"
    for step in (10, 2, 0):  # step10 sorts before step2 as text
        write_json(
            run / f"step{step}" / "TOFU_SUMMARY.json",
            {**summary(step, 10.0**-step, 0.5), "done": True, "name": "x"},
        )
    (run / "step20").mkdir()  # evaluated later, not yet: not a point
    write_json(
        tmp_path / "NPO" / "seed1" / "step4" / "TOFU_SUMMARY.json", summary(4, 0.1, 0.4)
    )
    write_json(tmp_path / "target" / "TOFU_SUMMARY.json", summary(0, 1e-9, 0.6))

    paths = load_paths(tmp_path)
    assert list(paths) == ["NPO", "NPO_GRU"]
    assert list(paths["NPO_GRU"]) == [3]
    points = paths["NPO_GRU"][3]
    assert [p.step for p in points] == [0, 2, 10]
    assert [p.forget_quality for p in points] == [1.0, 1e-2, 1e-10]
    assert points[1].metrics == {
        "forget_quality": 1e-2,
        "model_utility": 0.5,
        "step": 2.0,
    }


def test_a_summary_without_the_metrics_is_an_error(tmp_path: Path) -> None:
    write_json(tmp_path / "NPO/seed0/step0/TOFU_SUMMARY.json", {"forget_quality": 1})
    with pytest.raises(ValueError, match="no model_utility"):
        load_paths(tmp_path)


def stats(mean: float | None, std: float | None) -> Stats:
    return Stats("X", "GRU", mean, std, 1 if std is None else 3)


def test_verdicts_against_the_seed_spread() -> None:
    base = stats(0.40, 0.02)
    assert (
        verdict(base, stats(0.43, 0.01)) == "higher utility at matched forget quality"
    )
    assert verdict(base, stats(0.35, 0.03)) == "lower utility at matched forget quality"
    # |0.41 - 0.40| = 0.01 <= max(0.02, 0.01); |0.37 - 0.40| = 0.03 <= max(0.02, 0.04).
    assert verdict(base, stats(0.41, 0.01)) == "inside the seed spread: no verdict"
    assert verdict(base, stats(0.37, 0.04)) == "inside the seed spread: no verdict"
    assert verdict(base, stats(0.90, None)) == "one seed: no verdict"
    assert verdict(stats(0.40, None), stats(0.90, 0.01)) == "one seed: no verdict"
    assert verdict(base, stats(None, None)) == "level not reached: no verdict"


def test_compare_matches_each_method_at_its_lowest_peak(root: Path) -> None:
    graddiff, rmu = compare(load_paths(root))
    assert (graddiff.method, graddiff.level) == ("GradDiff", 1e-3)
    assert [s.label for s in graddiff.stats] == [
        "GradDiff",
        "GradDiff_GRU",
        "GradDiff_GRU-forget",
    ]
    base, gru, forget = graddiff.stats
    assert graddiff.base is base and base.variant == "base" and gru.variant == "GRU"
    assert (base.mean, base.std, base.seeds) == pytest.approx((0.42, 0.04 / 2**0.5, 2))
    assert (gru.mean, gru.std, gru.seeds) == pytest.approx((0.5, 0.0, 2))
    assert (forget.mean, forget.std, forget.seeds) == (pytest.approx(0.375), None, 1)
    assert (rmu.method, rmu.level) == ("RMU", 1e-4)
    assert [(s.variant, s.mean) for s in rmu.stats] == [
        ("base", pytest.approx(0.55)),
        ("GRU-host", 0.56),
    ]


def test_markdown_has_the_numbers_and_verdicts(root: Path) -> None:
    text = markdown(compare(load_paths(root)))
    lines = text.splitlines()
    assert (
        "| method | matched forget_quality | base | GRU | Δ GRU | GRU-forget"
        " | Δ GRU-forget | GRU-host | Δ GRU-host |"
    ) in lines
    assert (
        "| GradDiff | 1.00e-03 | 0.420 ± 0.028 (2 seeds) | 0.500 ± 0.000 (2 seeds)"
        " | +0.080 | 0.375 (1 seed) | -0.045 | – | – |"
    ) in lines
    assert (
        "| RMU | 1.00e-04 | 0.550 (1 seed) | – | – | – | – | 0.560 (1 seed) | +0.010 |"
        in lines
    )
    assert lines[-3:] == [
        "- GradDiff_GRU vs GradDiff: higher utility at matched forget quality",
        "- GradDiff_GRU-forget vs GradDiff: one seed: no verdict",
        "- RMU_GRU-host vs RMU: one seed: no verdict",
    ]


def test_plot_writes_a_png(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "paths.png"
    paths = load_paths(root)
    plot_paths(paths, compare(paths), out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000


def test_a_run_that_never_rises_leaves_nothing_to_compare(tmp_path: Path) -> None:
    """GradAscent over-forgets: its forget_quality only falls, so the matched level
    is the target's and every run's utility there is the target's; no verdict."""
    runs = {
        ("GradAscent", 0): [TARGET, (5, 1e-9, 0.1)],
        ("GradAscent", 1): [TARGET, (5, 1e-12, 0.0)],
        ("GradAscent_GRU", 0): [TARGET, (5, 1e-4, 0.3)],
        ("GradAscent_GRU", 1): [TARGET, (5, 1e-3, 0.2)],
    }
    (comparison,) = compare(load_paths(write_runs(tmp_path, runs)))
    assert comparison.stalled and comparison.level == TARGET[1]
    assert [s.mean for s in comparison.stats] == [0.6, 0.6]
    assert markdown([comparison]).splitlines()[-1] == (
        "- GradAscent_GRU vs GradAscent: a run never raised forget_quality above"
        " its start: no verdict"
    )
    (rising,) = compare({"X": {0: [Point(0, 1e-6, 0.6, {}), Point(5, 1e-3, 0.5, {})]}})
    assert not rising.stalled
