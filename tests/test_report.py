"""``gru-plugin report`` on fixture evals and on the host's reference eval logs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
from pathlib import Path

import pytest

from gru_plugin.cli import gru_plugin
from gru_plugin.report import (
    lm_eval_summary,
    load_gru_logs,
    load_rows,
    muse_split,
    verdicts,
)

REPO = Path(__file__).resolve().parents[1]
TOFU = Path(os.environ.get("GRU_TOFU_DATA", REPO.parent / "shared" / "data" / "tofu"))
REFERENCE_EVAL = TOFU / "reference_eval"
LM_EVAL_FIXTURES = REPO / "tests/fixtures/lm_eval"
LM_EVAL_RESULTS = next((LM_EVAL_FIXTURES / "gru-plugin__fixture").glob("results_*"))
"""lm-eval 0.4.8's own results file for wmdp_cyber and mmlu (see make_results.py)."""
LM_EVAL_0_4_11_RESULTS = next(
    (LM_EVAL_FIXTURES / "lm-eval-0.4.11/gru-plugin__fixture").glob("results_*")
)
"""The same evaluation's file from lm-eval 0.4.11, the host's pin after 0.4.8 (see
make_results_0_4_11.py)."""

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
    with pytest.raises(SystemExit) as raised:
        gru_plugin(["report", str(tmp_path), "--out", str(tmp_path / "out")])
    message = str(raised.value)
    files = "TOFU_SUMMARY.json, MUSE_SUMMARY.json or LMEval_SUMMARY.json"
    assert f"no {files} under {tmp_path}." in message
    for command in ("eval/tofu/default", "eval/muse/default", "eval/wmdp/default"):
        assert f"experiment={command}" in message
    assert (
        "lm_eval --output_path writes its own results_<date>.json (<name>_<date>.json "
        "for a <name>.json path), read as well."
    ) in message


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


HYDRA_CONFIG = """\
model:
  model_args:
    pretrained_model_name_or_path: muse-bench/MUSE-${data_split}_target
mode: eval
task_name: TASK
data_split: SPLIT
eval:
  muse:
    handler: MUSEEvaluator
    output_dir: ${paths.output_dir}
    data_split: ${data_split}
paths:
  output_dir: saves/${mode}/${task_name}
  work_dir: ${hydra:runtime.cwd}
"""
"""What Hydra saves beside the host's MUSE eval: interpolations left unresolved."""


def write_muse(folder: Path, split: str, summary: dict) -> None:
    """A host MUSE eval's output folder: the summary and Hydra's config."""
    write_json(folder / "MUSE_SUMMARY.json", summary)
    config = HYDRA_CONFIG.replace("SPLIT", split).replace("TASK", folder.name)
    (folder / ".hydra").mkdir()
    (folder / ".hydra/config.yaml").write_text(config)


def muse_run(knowmem: float, verbmem: float, privleak: float, retain: float, **more):
    return {
        "forget_knowmem_ROUGE": knowmem,
        "forget_verbmem_ROUGE": verbmem,
        "privleak": privleak,
        "retain_knowmem_ROUGE": retain,
        **more,
    }


@pytest.fixture
def muse_evals(tmp_path: Path) -> list[Path]:
    """News: target, retain, NPO and NPO_GRU (two seeds, extraction_strength, GRU
    fired on 2 of 5 steps); Books: SimNPO and SimNPO_GRU (one seed each)."""
    news, books = tmp_path / "muse_news", tmp_path / "muse_books"
    write_muse(news / "target", "News", muse_run(0.64, 0.58, -99.8, 0.56))
    write_muse(news / "retain", "News", muse_run(0.33, 0.20, 0.0, 0.56))
    runs = {
        "NPO": [
            muse_run(0.30, 0.40, -10.0, 0.40, extraction_strength=0.05),
            muse_run(0.32, 0.30, -14.0, 0.44, extraction_strength=0.07),
        ],
        "NPO_GRU": [
            muse_run(0.29, 0.352, -10.0, 0.441, extraction_strength=0.05),
            muse_run(0.31, 0.352, -11.6, 0.461, extraction_strength=0.05),
        ],
    }
    for label, seeds in runs.items():
        for seed, summary in enumerate(seeds):
            write_muse(news / label / f"seed{seed}", "News", summary)
    for seed in (0, 1):
        history = [
            {"step": step, "gru/cos": 0.1, "gru/fired": fired}
            for step, fired in enumerate((1.0, 0.0, 1.0, 0.0, 0.0))
        ]
        write_json(
            news / f"NPO_GRU/seed{seed}/trainer_state.json", {"log_history": history}
        )
    write_muse(books / "SimNPO", "Books", muse_run(0.20, 0.50, -30.0, 0.60))
    write_muse(books / "SimNPO_GRU", "Books", muse_run(0.15, 0.45, -20.0, 0.65))
    return [news, books]


def test_muse_split_comes_from_the_hydra_config(muse_evals: list[Path]) -> None:
    news, books = muse_evals
    assert muse_split(books / "SimNPO/MUSE_SUMMARY.json") == "Books"
    assert muse_split(news / "NPO/seed1/MUSE_SUMMARY.json") == "News"
    shutil.rmtree(books / "SimNPO/.hydra")
    assert muse_split(books / "SimNPO/MUSE_SUMMARY.json") == "MUSE"


def test_muse_only_report_has_a_table_per_split(
    muse_evals: list[Path], tmp_path: Path, capsys
) -> None:
    """No TOFU summary: MUSE alone makes the report, one leaderboard table per split
    with the change against the base, and a line of facts per GRU row."""
    out = tmp_path / "report"
    gru_plugin(["report", *map(str, muse_evals), "--out", str(out)])
    table = (out / "table.md").read_text()
    news = table[table.index('halign="left">News</th>') :]
    assert table.index('colspan="4" halign="left">Books</th>') < table.index(
        'colspan="5" halign="left">News</th>'
    )
    assert (
        "<tr><th></th><th>forget_knowmem_ROUGE</th><th>forget_verbmem_ROUGE</th>"
        "<th>privleak</th><th>retain_knowmem_ROUGE</th><th>extraction_strength</th>"
        "</tr>"
    ) in news
    assert (
        "<tr><th>Finetuned</th><td>0.64</td><td>0.58</td><td>-99.8</td><td>0.56</td>"
        "<td>–</td></tr>"
    ) in news
    assert "<tr><th>Retain</th><td>0.33</td><td>0.20</td><td>0.0</td>" in news
    assert (
        "<tr><td>NPO</td><td>0.31 ± 0.014</td><td>0.35 ± 0.071</td>"
        "<td>-12.0 ± 2.8</td><td>0.42 ± 0.028</td><td>0.060 ± 0.014</td></tr>"
    ) in news
    npo_gru = (
        "<tr><td>NPO+GRU</td><td>0.30 ± 0.014 (-0.010)</td>"
        "<td>0.35 ± 0.000 (+0.002)</td><td>-10.8 ± 1.1 (+1.2)</td>"
        "<td>0.45 ± 0.014 (+0.031)</td><td>0.050 ± 0.000 (-0.010)</td></tr>"
    )
    assert npo_gru in news
    news_verdict = (
        "- NPO+GRU vs NPO: retain_knowmem_ROUGE +0.031, forget_knowmem_ROUGE -0.010, "
        "forget_verbmem_ROUGE +0.002, privleak +1.2, extraction_strength -0.010 "
        "(GRU fired on 40% of steps)"
    )
    books_verdict = (
        "- SimNPO+GRU vs SimNPO: retain_knowmem_ROUGE +0.050, "
        "forget_knowmem_ROUGE -0.050, forget_verbmem_ROUGE -0.050, privleak +10.0"
    )
    assert f"\n{news_verdict}\n" in news and f"\n{books_verdict}\n" in table
    assert "<tr><td>SimNPO+GRU</td><td>0.15 (-0.050)</td>" in table
    printed = capsys.readouterr().out
    assert "MUSE News\n\n| method | seeds | forget_knowmem_ROUGE |" in printed
    assert (
        "| NPO+GRU | 2 | 0.30 ± 0.014 (-0.010) | 0.35 ± 0.000 (+0.002) | "
        "-10.8 ± 1.1 (+1.2) | 0.45 ± 0.014 (+0.031) | 0.050 ± 0.000 (-0.010) |"
    ) in printed
    assert news_verdict in printed and books_verdict in printed
    assert f"wrote table.md, muse.csv and plots to {out}" in printed
    with (out / "muse.csv").open() as handle:
        muse = list(csv.DictReader(handle))
    assert list(muse[0])[:6] == [
        "split",
        "method",
        "base",
        "seeds",
        "forget_knowmem_ROUGE_mean",
        "forget_knowmem_ROUGE_std",
    ]
    by_name = {(row["split"], row["method"]): row for row in muse}
    assert len(by_name) == 6
    row = by_name["News", "NPO+GRU"]
    assert (row["base"], row["seeds"]) == ("NPO", "2")
    assert float(row["retain_knowmem_ROUGE_mean"]) == pytest.approx(0.451)
    assert float(row["privleak_std"]) == pytest.approx(statistics.stdev([-10, -11.6]))
    assert by_name["Books", "SimNPO"]["extraction_strength_mean"] == ""
    assert not (out / "table.csv").exists() and not (out / "tradeoff.png").exists()


def test_lm_eval_results_file_reads_as_the_hosts_summary() -> None:
    """lm-eval's own file gives what the host's LMEvalEvaluator.summarize writes:
    mmlu's group aggregate (not its 57 subtasks), ``,none`` and alias dropped."""
    results = json.loads(LM_EVAL_RESULTS.read_text())
    mmlu = results["groups"]["mmlu"]
    results["results"]["mmlu"] = {"alias": "mmlu", "acc,none": 0.5}  # not the group's
    assert lm_eval_summary(results) == {
        "mmlu/acc": mmlu["acc,none"],
        "mmlu/acc_stderr": mmlu["acc_stderr,none"],
        "wmdp_cyber/acc": 0.25,
        "wmdp_cyber/acc_stderr": 0.25,
    }
    assert lm_eval_summary({"method": "not lm-eval's"}) is None


@pytest.mark.parametrize(
    "results_file", [LM_EVAL_RESULTS, LM_EVAL_0_4_11_RESULTS], ids=["0.4.8", "0.4.11"]
)
def test_lm_eval_versions_read_into_the_same_keys(results_file: Path) -> None:
    """0.4.11 changed the file around the results (``lm_eval_version`` added,
    ``start_time``/``end_time`` gone, fuller ``configs``), not ``results``,
    ``groups`` or ``group_subtasks``: both read as the host's summary."""
    results = json.loads(results_file.read_text())
    assert lm_eval_summary(results) == pytest.approx(
        {
            "mmlu/acc": 0.2412281,
            "mmlu/acc_stderr": 0.0280839,
            "wmdp_cyber/acc": 0.25,
            "wmdp_cyber/acc_stderr": 0.25,
        }
    )


def test_lm_eval_fixtures_come_from_their_versions() -> None:
    """The two fixtures come from the lm-eval versions they are named after."""
    new = json.loads(LM_EVAL_0_4_11_RESULTS.read_text())
    old = json.loads(LM_EVAL_RESULTS.read_text())
    assert new["lm_eval_version"] == "0.4.11" and "lm_eval_version" not in old
    assert "start_time" in old and "start_time" not in new
    assert new["model_name_sanitized"] == old["model_name_sanitized"]


def test_lm_eval_layouts_of_both_versions_make_the_same_rows(
    tmp_path: Path, capsys
) -> None:
    """Where each version's ``--output_path`` puts the file, as their
    EvaluationTracker.save_results_aggregated does: ``DIR/<model>/results_<date>``
    (both; with no model name 0.4.8 leaves out the model folder, 0.4.11 names it at
    random), and for ``DIR/lm_eval.json`` 0.4.8's folder
    ``DIR/lm_eval.json/<model>/results_<date>``, 0.4.11's ``DIR/lm_eval_<date>``
    (beside an older one). Each run reads as its ``DIR``, into the same columns."""
    root = tmp_path / "lm_eval"
    date = "2026-12-05T01-23-28.247402"
    placed = {
        f"v0.4.8/dir/gru-plugin__fixture/results_{date}.json": LM_EVAL_RESULTS,
        f"v0.4.8/file/lm_eval.json/gru-plugin__fixture/results_{date}.json": (
            LM_EVAL_RESULTS
        ),
        f"v0.4.11/dir/gru-plugin__fixture/results_{date}.json": LM_EVAL_0_4_11_RESULTS,
        f"v0.4.11/file/lm_eval_{date}.json": LM_EVAL_0_4_11_RESULTS,
        f"v0.4.11/unnamed/k3x9q2ab/results_{date}.json": LM_EVAL_0_4_11_RESULTS,
    }
    for where, fixture in placed.items():
        (root / where).parent.mkdir(parents=True)
        shutil.copy(fixture, root / where)
    unnamed = root / f"v0.4.11/unnamed/k3x9q2ab/results_{date}.json"
    results = json.loads(unnamed.read_text())
    results["model_name"] = results["model_name_sanitized"] = "k3x9q2ab"
    write_json(unnamed, results)
    older = json.loads(LM_EVAL_0_4_11_RESULTS.read_text())
    older["groups"]["mmlu"]["acc,none"] = 0.9
    write_json(root / "v0.4.11/file/lm_eval_2000-01-01T00-00-00.json", older)
    out = tmp_path / "report"
    gru_plugin(["report", str(root), "--out", str(out)])
    lines = [
        "| method | seeds | mmlu/acc | wmdp_cyber/acc |",
        "|---|---|---|---|",
        "| v0.4.11/dir | 1 | 0.24 | 0.25 |",
        "| v0.4.11/file | 1 | 0.24 | 0.25 |",
        "| v0.4.11/unnamed | 1 | 0.24 | 0.25 |",
        "| v0.4.8/dir | 1 | 0.24 | 0.25 |",
        "| v0.4.8/file | 1 | 0.24 | 0.25 |",
    ]
    assert "\n".join(lines) + "\n" in capsys.readouterr().out
    with (out / "lm_eval.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["mmlu/acc_mean"] for row in rows} == {"0.2412280701754386"}
    assert {row["wmdp_cyber/acc_mean"] for row in rows} == {"0.25"}


@pytest.fixture
def lm_evals(tmp_path: Path) -> Path:
    """NPO: two seeds of the host's LMEval_SUMMARY.json (which counts over lm-eval's
    file beside it); NPO_GRU: lm-eval's own results, in its model folder, beside an
    older file of other numbers."""
    root = tmp_path / "lm_eval"
    for seed, (mmlu, wmdp) in enumerate([(0.25, 0.27), (0.27, 0.29)]):
        summary = {
            "mmlu/acc": mmlu,
            "mmlu/acc_stderr": 0.003,
            "wmdp_cyber/acc": wmdp,
            "wmdp_cyber/acc_stderr": 0.01,
        }
        write_json(root / f"NPO/seed{seed}/LMEval_SUMMARY.json", summary)
    for run in ("NPO/seed1", "NPO_GRU/seed0"):
        model = root / run / "gru-plugin__fixture"
        model.mkdir(parents=True)
        shutil.copy(LM_EVAL_RESULTS, model)
    older = json.loads(LM_EVAL_RESULTS.read_text())
    older["groups"]["mmlu"]["acc,none"] = older["results"]["wmdp_cyber"]["acc,none"] = (
        0.9
    )
    write_json(model / "results_2000-01-01T00-00-00.000000.json", older)
    return root


def test_lm_eval_table_from_both_formats(
    lm_evals: Path, tmp_path: Path, capsys
) -> None:
    """The host's summaries and lm-eval's file in one table, the GRU row against its
    base; the newest results file of a folder counts, its model folder does not."""
    rows = load_rows([lm_evals], "LMEval_SUMMARY.json", "results_*.json")
    assert [(row.name, row.seeds) for row in rows] == [("NPO", 2), ("NPO+GRU", 1)]
    out = tmp_path / "report"
    gru_plugin(["report", str(lm_evals), "--out", str(out)])
    table = (out / "table.md").read_text()
    lines = [
        "| method | seeds | mmlu/acc | wmdp_cyber/acc |",
        "|---|---|---|---|",
        "| NPO | 2 | 0.26 ± 0.014 | 0.28 ± 0.014 |",
        "| NPO+GRU | 1 | 0.24 (-0.019) | 0.25 (-0.030) |",
    ]
    assert "\n".join(lines) in table
    assert (
        "WMDP and MMLU load their questions from the Hugging Face hub, so on an "
        "offline machine these columns come only from runs evaluated elsewhere."
    ) in table
    printed = capsys.readouterr().out
    assert "\n".join(lines) in printed
    assert f"wrote table.md and lm_eval.csv to {out}" in printed
    with (out / "lm_eval.csv").open() as handle:
        by_name = {row["method"]: row for row in csv.DictReader(handle)}
    assert by_name["NPO+GRU"]["base"] == "NPO"
    assert float(by_name["NPO+GRU"]["mmlu/acc_mean"]) == pytest.approx(0.24122807)
    assert float(by_name["NPO"]["wmdp_cyber/acc_std"]) == pytest.approx(
        0.0141421, rel=1e-5
    )


def test_mixed_report_keeps_tofu_as_it_was(
    evals: Path, muse_evals: list[Path], lm_evals: Path, tmp_path: Path, capsys
) -> None:
    """TOFU, MUSE and lm-eval in one report: TOFU's part of table.md and table.csv
    are those of TOFU alone, MUSE's and lm-eval's tables follow."""
    # GRU's logs go by label alone: MUSE's NPO_GRU would count towards TOFU's too.
    for state in muse_evals[0].rglob("trainer_state.json"):
        state.unlink()
    tofu = [str(evals / "evals"), str(evals / "unlearn")]
    alone, mixed = tmp_path / "alone", tmp_path / "mixed"
    gru_plugin(["report", *tofu, "--out", str(alone)])
    capsys.readouterr()
    gru_plugin(
        ["report", *tofu, *map(str, muse_evals), str(lm_evals), "--out", str(mixed)]
    )
    printed = capsys.readouterr().out
    table = (mixed / "table.md").read_text()
    assert table.startswith((alone / "table.md").read_text())
    assert table.index("## MUSE") < table.index("## lm-eval")
    assert "<tr><td>SimNPO+GRU</td><td>0.15 (-0.050)</td>" in table
    assert "| NPO+GRU | 1 | 0.24 (-0.019) | 0.25 (-0.030) |" in table
    assert (mixed / "table.csv").read_text() == (alone / "table.csv").read_text()
    assert not (alone / "muse.csv").exists() and not (alone / "lm_eval.csv").exists()
    assert "| NPO+GRU | 3 | 4.00e-06 ± 0.00e+00 (×2) | 0.48 ± 0.020 (+0.060) |" in (
        printed
    )
    assert "MUSE Books" in printed and "lm-eval\n\n| method |" in printed
    assert f"wrote table.md, table.csv, muse.csv, lm_eval.csv and plots to {mixed}" in (
        printed
    )
