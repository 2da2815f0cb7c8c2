"""``gru-plugin report`` on fixture evals and on the host's reference eval logs."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest

from gru_plugin.cli import gru_plugin
from gru_plugin.report import load_gru_logs, load_rows, verdicts

REPO = Path(__file__).resolve().parents[1]
TOFU = Path(os.environ.get("GRU_TOFU_DATA", REPO.parent / "shared" / "data" / "tofu"))
REFERENCE_EVAL = TOFU / "reference_eval"

NPO = [
    {"forget_quality": 1e-6, "model_utility": 0.40, "privleak": -50.0},
    {"forget_quality": 3e-6, "model_utility": 0.42, "privleak": -40.0},
    {"forget_quality": 2e-6, "model_utility": 0.44, "privleak": -45.0},
]
NPO_GRU = [
    {"forget_quality": 4e-6, "model_utility": 0.46, "privleak": -30.0},
    {"forget_quality": 4e-6, "model_utility": 0.48, "privleak": -20.0},
    {"forget_quality": 4e-6, "model_utility": 0.50, "privleak": -25.0},
]


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def evals(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    write_json(
        root / "evals/target/TOFU_SUMMARY.json",
        {"forget_quality": 1e-20, "model_utility": 0.5, "forget_Q_A_ROUGE": 0.9},
    )
    write_json(root / "evals/retain/TOFU_SUMMARY.json", {"model_utility": 0.49})
    for seed, (base, gru) in enumerate(zip(NPO, NPO_GRU, strict=True)):
        write_json(root / f"evals/NPO/seed{seed}/TOFU_SUMMARY.json", base)
        write_json(root / f"evals/NPO_GRU/seed{seed}/TOFU_SUMMARY.json", gru)
        history = [
            {"step": step, "gru/cos": -0.1 * step, "gru/fired": 1.0, "loss": 1.0}
            for step in (1, 2, 3)
        ]
        write_json(
            root / f"unlearn/NPO_GRU/seed{seed}/trainer_state.json",
            {"log_history": [*history, {"step": 3, "train_loss": 1.0}]},
        )
    return root


def test_rows_average_seeds_and_pair_gru_with_base(evals: Path) -> None:
    rows = load_rows([evals / "evals"])
    assert [row.name for row in rows] == ["Finetuned", "Retain", "NPO", "NPO+GRU"]
    npo, npo_gru = rows[2], rows[3]
    assert npo.seeds == 3 and npo_gru.base is npo
    utility = [run["model_utility"] for run in NPO]
    assert npo.mean("model_utility") == pytest.approx(statistics.fmean(utility))
    assert npo.std("model_utility") == pytest.approx(statistics.stdev(utility))
    assert rows[0].std("model_utility") is None


def test_a_gru_variant_pairs_with_its_base(evals: Path) -> None:
    """``NPO_GRU-forget`` (gru.project=forget) is one more GRU row of NPO."""
    for seed, run in enumerate(NPO_GRU):
        write_json(evals / f"evals/NPO_GRU-forget/seed{seed}/TOFU_SUMMARY.json", run)
    rows = load_rows([evals / "evals"])
    names = [row.name for row in rows]
    assert names == ["Finetuned", "Retain", "NPO", "NPO+GRU", "NPO+GRU-forget"]
    assert rows[4].base is rows[2]


def test_report_writes_table_csv_and_plots(evals: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    gru_plugin(
        ["report", str(evals / "evals"), str(evals / "unlearn"), "--out", str(out)]
    )
    printed = capsys.readouterr().out
    # NPO: utility 0.42 ± 0.02; +GRU: 0.48 ± 0.02, +0.06 vs base, quality ×2.
    assert "| NPO | 3 | 2.00e-06 ± 1.00e-06 | 0.42 ± 0.020 |" in printed
    assert (
        "| NPO+GRU | 3 | 4.00e-06 ± 0.00e+00 (×2) | 0.48 ± 0.020 (+0.060) |" in printed
    )
    table = (out / "table.md").read_text()
    assert '<table class="dataframe">' in table
    assert "<tr><th>Finetuned</th><td>1.00e-20</td><td>0.50</td>" in table
    assert "<tr><th>Retain</th><td>–</td><td>0.49</td>" in table
    with (out / "table.csv").open() as handle:
        by_name = {row["method"]: row for row in csv.DictReader(handle)}
    assert by_name["NPO+GRU"]["base"] == "NPO"
    assert float(by_name["NPO+GRU"]["model_utility_mean"]) == pytest.approx(0.48)
    assert float(by_name["NPO+GRU"]["privleak_std"]) == pytest.approx(5.0)
    for plot in ("tradeoff.png", "gru_trace.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")


def test_model_utility_parts_come_from_the_eval_log(evals: Path, tmp_path) -> None:
    """Each data set's harmonic mean beside model_utility (a zero makes it zero)."""
    parts = {
        "retain_Q_A_Prob": 0.5,
        "retain_Q_A_ROUGE": 0.5,
        "retain_Truth_Ratio": 0.5,
        "ra_Q_A_Prob_normalised": 0.2,
        "ra_Q_A_ROUGE": 0.4,
        "ra_Truth_Ratio": 0.4,
        "wf_Q_A_Prob_normalised": 0.1,
        "wf_Q_A_ROUGE": 0.0,
        "wf_Truth_Ratio": 0.9,
    }
    log = {name: {"agg_value": value} for name, value in parts.items()}
    write_json(evals / "evals/target/TOFU_EVAL.json", log)
    target = load_rows([evals / "evals"])[0]
    assert target.mean("utility_retain") == pytest.approx(0.5)
    assert target.mean("utility_real_authors") == pytest.approx(0.3)
    assert target.mean("utility_world_facts") == 0.0
    out = tmp_path / "report"
    gru_plugin(["report", str(evals / "evals"), "--out", str(out)])
    table = (out / "table.md").read_text()
    assert "| Finetuned | 0.50 | 0.50 | 0.30 | 0.000 |" in table
    assert "| NPO | 0.42 ± 0.020 | – | – | – |" in table


def test_report_with_trajectories_compares_at_matched_quality(
    evals: Path, tmp_path: Path
) -> None:
    """Two seeds per label, all ending at forget_quality 1 (the matched level):
    NPO there at utility 0.30/0.34, +GRU at 0.42/0.46: +0.12 > spread 0.028."""
    paths = tmp_path / "trajectories"
    for label, utilities in {"NPO": (0.40, 0.42), "NPO_GRU": (0.46, 0.48)}.items():
        for seed, utility in enumerate(utilities):
            for step, quality, at in ((0, 1e-4, 0.5), (5, 1.0, 2 * utility - 0.5)):
                summary = {"forget_quality": quality, "model_utility": at}
                write_json(
                    paths / label / f"seed{seed}/step{step}/TOFU_SUMMARY.json", summary
                )
    out = tmp_path / "report"
    gru_plugin(
        [
            "report",
            str(evals / "evals"),
            "--out",
            str(out),
            "--trajectories",
            str(paths),
        ]
    )
    table = (out / "table.md").read_text()
    assert "| NPO | 1.00e+00 |" in table  # the highest level every path reaches
    assert "| 0.320 ± 0.028 (2 seeds) | 0.440 ± 0.028 (2 seeds) | +0.120 |" in table
    assert "- NPO_GRU vs NPO: higher utility at matched forget quality" in table
    assert (out / "paths.png").read_bytes().startswith(b"\x89PNG")
    with (out / "paths.csv").open() as handle:
        points = list(csv.DictReader(handle))
    assert len(points) == 8
    last = points[-1]
    assert [last[key] for key in ("label", "method", "variant", "seed", "step")] == [
        "NPO_GRU",
        "NPO",
        "GRU",
        "1",
        "5",
    ]
    assert float(last["forget_quality"]) == 1.0
    assert float(last["model_utility"]) == pytest.approx(0.46)


def test_report_without_summaries_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no TOFU_SUMMARY.json under"):
        gru_plugin(["report", str(tmp_path), "--out", str(tmp_path / "out")])


@pytest.mark.skipif(
    not REFERENCE_EVAL.is_dir(),
    reason=f"host reference eval logs not found at {REFERENCE_EVAL} (GRU_TOFU_DATA)",
)
def test_report_on_host_reference_logs(tmp_path: Path, capsys) -> None:
    gru_plugin(["report", str(REFERENCE_EVAL), "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    full = next(
        line for line in lines if "Llama-3.2-1B-Instruct_full/evals_forget10" in line
    )
    assert "| 3.91e-22 | 0.60 |" in full
    retain = next(line for line in lines if "3.2-1B-Instruct_retain90 |" in line)
    assert "| – | 0.59 |" in retain


def test_verdicts_answer_the_papers_question(evals: Path) -> None:
    rows = load_rows([evals / "evals"])
    logs = load_gru_logs([evals / "unlearn"])
    (line,) = verdicts(rows, logs)
    assert line == (
        "- NPO+GRU vs NPO: model_utility +0.0600, forget_quality ×2 — "
        "yes, higher utility at equal or better forget quality "
        "(GRU fired on 100% of steps)"
    )
    npo_gru = rows[3]
    npo_gru.values["forget_quality"] = [1e-6] * 3
    npo_gru.values["model_utility"] = [0.1] * 3
    assert verdicts(rows)[0].endswith("— no, lower utility, worse forget quality")
    # GradAscent and its +GRU both at utility 0: the utility did not change.
    npo_gru.values["model_utility"] = list(rows[2].values["model_utility"])
    npo_gru.values["forget_quality"] = [1.0] * 3
    assert verdicts(rows)[0].endswith("— no change in utility, better forget quality")
    npo_gru.values = {key: list(values) for key, values in rows[2].values.items()}
    assert verdicts(rows)[0].endswith("— no measurable change")
