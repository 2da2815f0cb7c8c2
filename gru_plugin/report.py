"""``gru-plugin report``: leaderboard-style results from the host's evals.

    gru-plugin report DIR... [--out OUT] [--forget-split forget10] [--trajectories T]

Every folder under ``DIR`` that holds one of the host's eval summaries is one run of
its benchmark: ``TOFU_SUMMARY.json`` (``src/eval.py experiment=eval/tofu/default``),
``MUSE_SUMMARY.json`` (``experiment=eval/muse/default``; its data split, News or
Books, from the ``.hydra/config.yaml`` beside it) or ``LMEval_SUMMARY.json``
(``experiment=eval/wmdp/default``, i.e. ``eval=lm_eval``), or lm-eval's own
results file (``lm_eval --output_path DIR`` writes ``results_<date>.json`` in a folder
named after the model, which does not count; from lm-eval 0.4.11 on, ``--output_path
NAME.json`` writes ``NAME_<date>.json`` beside it; of several files the newest does).
A run's label is its path below ``DIR`` with a trailing ``seed<N>`` folder dropped,
so seeds of one label are averaged. A label ``target``/``finetuned`` is the
*Finetuned* row, ``retain`` the *Retain* row, and a label ending in ``_GRU``/``+gru``
is the GRU variant of the label without it; its cells carry the change against that
base. ``trainer_state.json`` files found the same way feed the ``gru/cos`` and
``gru/fired`` plot and the share of steps GRU fired on.

Writes ``table.md``: TOFU's table (the layout of the host's
``community/leaderboard.md``), then one MUSE table per data split (the leaderboard's
MUSE columns), then an lm-eval table (one column per task's ``acc``/``acc_norm``),
each present when its summaries are; ``table.csv`` (TOFU), ``muse.csv`` and
``lm_eval.csv``; ``tradeoff.png`` (TOFU) and, when GRU logs exist,
``gru_trace.png``; with ``--trajectories DIR`` also model_utility at matched
forget_quality along each TOFU run (in ``table.md``), ``paths.png`` and
``paths.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from omegaconf import OmegaConf

TOFU_FILE = "TOFU_SUMMARY.json"
MUSE_FILE = "MUSE_SUMMARY.json"
LM_EVAL_RESULTS = "*_????-??-??T??-??-??*.json"
"""lm-eval's own results file: ``results_<date>.json``, or from lm-eval 0.4.11 on
``<name>_<date>.json`` beside an ``--output_path <name>.json``; ``<date>`` is when it
was written, in ISO format with ``-`` for ``:``."""
LM_EVAL_FILES = ("LMEval_SUMMARY.json", LM_EVAL_RESULTS)
"""The host's lm-eval summary, else lm-eval's own results file (one per run)."""

METRICS = (
    "forget_quality",
    "model_utility",
    "forget_truth_ratio",
    "forget_Q_A_ROUGE",
    "privleak",
)
"""Columns of the table, in order; a summary without one leaves its cell empty."""

UTILITY_PARTS = {
    "retain": ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio"),
    "real_authors": ("ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio"),
    "world_facts": ("wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"),
}
"""model_utility is the harmonic mean of these nine (TOFU_EVAL.json's entries); the
harmonic mean of each group shows which data set pulls it down."""
TOFU_CSV_COLUMNS = (*METRICS, *(f"utility_{group}" for group in UTILITY_PARTS))

MUSE_METRICS = (
    "forget_knowmem_ROUGE",
    "forget_verbmem_ROUGE",
    "privleak",
    "retain_knowmem_ROUGE",
)
"""The MUSE columns of the host's community leaderboard; extraction_strength
follows when the summaries have it."""
MUSE_CHANGES = (
    "retain_knowmem_ROUGE",
    "forget_knowmem_ROUGE",
    "forget_verbmem_ROUGE",
    "privleak",
    "extraction_strength",
)
"""The order of a MUSE verdict line: what GRU should keep first, then the forgetting."""
MUSE_QUESTION = (
    "did GRU lower forget_knowmem/verbmem_ROUGE (better forgetting) and keep "
    "retain_knowmem_ROUGE up (endpoints, means over seeds)?"
)
LM_EVAL_METRIC = re.compile(r"[^/]+/acc(_norm)?")
"""lm-eval's columns: each task's accuracy, the one WMDP and MMLU report."""
LM_EVAL_NOTE = (
    "WMDP and MMLU load their questions from the Hugging Face hub, so on an offline "
    "machine these columns come only from runs evaluated elsewhere."
)

SEED_DIR = re.compile(r"seed[_-]?(\d+)", re.IGNORECASE)
GRU_SUFFIX = re.compile(r"(_GRU|\+GRU)(?P<variant>-\w+)?$", re.IGNORECASE)
"""``_GRU``/``+GRU``, optionally with a variant: ``GradDiff_GRU-forget``."""
ROLES = {"target": "Finetuned", "finetuned": "Finetuned", "retain": "Retain"}


@dataclass
class Row:
    """All seeds of one label, and the base row it is compared with."""

    label: str
    values: dict[str, list[float]] = field(default_factory=dict)
    base: Row | None = None
    split: str = ""

    @property
    def name(self) -> str:
        role = self.label.rsplit("/", 1)[-1].lower()  # muse/News/target too
        return ROLES.get(role) or gru_name(self.label)

    @property
    def seeds(self) -> int:
        return max((len(v) for v in self.values.values()), default=0)

    def mean(self, metric: str) -> float | None:
        values = self.values.get(metric)
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        values = self.values.get(metric, [])
        return statistics.stdev(values) if len(values) > 1 else None


def gru_name(label: str) -> str:
    """``GradDiff_GRU-forget`` → ``GradDiff+GRU-forget``."""
    return GRU_SUFFIX.sub(lambda match: "+GRU" + (match["variant"] or ""), label)


def _run_folder(path: Path, root: Path) -> tuple[str, ...]:
    """The folders below ``root`` of the run a file belongs to: lm-eval writes its
    results into a folder named after the model, below the folder it was given;
    lm-eval 0.4.8 made a folder of an ``--output_path <name>.json`` too."""
    parts = path.parent.relative_to(root).parts
    if parts and path.match(LM_EVAL_RESULTS):
        if parts[-1] == json.loads(path.read_text()).get("model_name_sanitized"):
            parts = parts[:-1]
        if parts and parts[-1].endswith(".json"):
            parts = parts[:-1]
    return parts


def _labelled(dirs: Iterable[Path], *patterns: str) -> list[tuple[str, Path]]:
    """``(label, file)`` for each run below ``dirs``, common prefix cut.

    A run with files of several ``patterns`` takes the first pattern's; of several
    files of one pattern, the last by name (lm-eval's newest ``results_<date>``).
    """
    found = []
    for root in dirs:
        runs: dict[tuple[str, ...], Path] = {}
        for pattern in reversed(patterns):
            for path in sorted(Path(root).rglob(pattern)):
                runs[_run_folder(path, root)] = path
        for folder, path in sorted(runs.items()):
            parts = list(folder)
            if parts and SEED_DIR.fullmatch(parts[-1]):
                parts.pop()
            found.append((parts or [Path(root).resolve().name], path))
    if len(found) > 1:
        while all(len(p) > 1 for p, _ in found) and len({p[0] for p, _ in found}) == 1:
            for parts, _ in found:
                parts.pop(0)
    return [("/".join(parts), path) for parts, path in found]


def utility_parts(eval_log: Path) -> dict[str, float]:
    """``utility_<group>``: the harmonic mean of each group of UTILITY_PARTS, read
    from the host's full eval log (none without it)."""
    if not eval_log.exists():
        return {}
    log = json.loads(eval_log.read_text())
    parts = {}
    for group, metrics in UTILITY_PARTS.items():
        values = [log.get(metric, {}).get("agg_value") for metric in metrics]
        if all(isinstance(value, int | float) for value in values):
            positive = all(value > 0 for value in values)
            parts[f"utility_{group}"] = (
                statistics.harmonic_mean(values) if positive else 0.0
            )
    return parts


def lm_eval_summary(results: dict) -> dict | None:
    """lm-eval's results file in the host's ``LMEval_SUMMARY.json`` keys, as the
    host's ``LMEvalEvaluator.summarize`` makes them: ``task/metric`` for each task
    asked for (a group's aggregate for a group such as mmlu, not its subtasks), the
    filter suffix (``,none``) cut, ``alias`` left out. None for a
    ``results_*.json`` that is not lm-eval's.
    """
    if not isinstance(results.get("results"), dict):
        return None
    grouped = results.get("group_subtasks", {}).values()
    subtasks = {task for tasks in grouped for task in tasks}
    groups = results.get("groups", {})
    summary = {}
    for task, metrics in results["results"].items():
        if task not in subtasks:
            for key, value in groups.get(task, metrics).items():
                if key != "alias":
                    summary[f"{task}/{key.split(',', 1)[0]}"] = value
    return summary


def read_summary(path: Path) -> dict | None:
    """A run's metrics: TOFU's with model_utility's parts from the eval log beside
    it, lm-eval's results file in the host's keys, any other summary as it is."""
    summary = json.loads(path.read_text())
    if path.name == TOFU_FILE:
        return summary | utility_parts(path.with_name("TOFU_EVAL.json"))
    if path.match(LM_EVAL_RESULTS):
        return lm_eval_summary(summary)
    return summary


def muse_split(summary: Path) -> str:
    """A MUSE eval's data split (News, Books): ``eval.muse.data_split`` of the Hydra
    config saved beside the summary; "MUSE" without one."""
    config = summary.parent / ".hydra" / "config.yaml"
    if not config.exists():
        return "MUSE"
    split = OmegaConf.select(
        OmegaConf.load(config),
        "eval.muse.data_split",
        default=None,
        throw_on_resolution_failure=False,
    )
    return str(split) if split else "MUSE"


def load_rows(
    dirs: Sequence[Path],
    *filenames: str,
    split_of: Callable[[Path], str] | None = None,
) -> list[Row]:
    """One row per label (per split, with ``split_of``), ordered by split, then
    Finetuned, Retain, each base and its GRU; empty when no summary is found.

    ``filenames`` are the summaries read (glob patterns; TOFU's by default).
    """
    rows: dict[tuple[str, str], Row] = {}
    for label, path in _labelled(dirs, *(filenames or (TOFU_FILE,))):
        summary = read_summary(path)
        if summary is None:
            continue
        split = split_of(path) if split_of else ""
        row = rows.setdefault((split, label), Row(label, split=split))
        for metric, value in summary.items():
            if isinstance(value, int | float):
                row.values.setdefault(metric, []).append(float(value))
    for (split, label), row in rows.items():
        base_label = GRU_SUFFIX.sub("", label)
        if base_label != label:
            row.base = rows.get((split, base_label))

    def order(row: Row) -> tuple:
        role = {"Finetuned": 0, "Retain": 1}.get(row.name, 2)
        base_label = GRU_SUFFIX.sub("", row.label).lower()
        return row.split, role, base_label, row.base is not None

    return sorted(rows.values(), key=order)


def by_split(rows: Sequence[Row]) -> Iterator[tuple[str, list[Row]]]:
    """``(split, rows)`` for each split, in the order of ``load_rows``."""
    for split, group in groupby(rows, key=lambda row: row.split):
        yield split, list(group)


def muse_metrics(rows: Sequence[Row]) -> tuple[str, ...]:
    """The leaderboard's MUSE columns, then extraction_strength if measured."""
    if any(row.mean("extraction_strength") is not None for row in rows):
        return (*MUSE_METRICS, "extraction_strength")
    return MUSE_METRICS


def lm_eval_metrics(rows: Sequence[Row]) -> list[str]:
    """Each task's ``acc`` (and ``acc_norm``) found, by task name."""
    found = {metric for row in rows for metric in row.values}
    return sorted(metric for metric in found if LM_EVAL_METRIC.fullmatch(metric))


def _number(metric: str, value: float, sign: str = "") -> str:
    if metric == "forget_quality":
        return f"{value:{sign}.2e}" if abs(value) < 0.01 else f"{value:{sign}.2g}"
    if metric == "privleak":
        return f"{value:{sign}.1f}"
    # The leaderboard's two decimals, and a third below 0.1 (a tiny model's scale).
    return f"{value:{sign}.2f}" if abs(value) >= 0.1 else f"{value:{sign}.3f}"


def cell(row: Row, metric: str) -> str:
    """``mean ± std`` over seeds, then the change against the base row if any.

    The change in forget_quality (a p-value spanning orders of magnitude) is a
    ratio; every other change is a difference.
    """
    mean = row.mean(metric)
    if mean is None:
        return "–"
    text = _number(metric, mean)
    std = row.std(metric)
    if std is not None:
        text += f" ± {_number(metric, std)}"
    base = row.base.mean(metric) if row.base else None
    if base is not None and metric == "forget_quality":
        text += f" (×{mean / base:.2g})" if base > 0 else ""
    elif base is not None:
        text += f" ({_number(metric, mean - base, '+')})"
    return text


def leaderboard_markdown(
    rows: Sequence[Row], split: str, metrics: Sequence[str] = METRICS
) -> str:
    """An HTML table inside markdown, as ``community/leaderboard.md`` has it."""
    head = "".join(f"<th>{m}</th>" for m in metrics)
    lines = [
        '<table class="dataframe">',
        "  <thead>",
        "    <tr><th>Method</th>"
        f'<th style="text-align: center;" colspan="{len(metrics)}" halign="left">'
        f"{split}</th></tr>",
        f"    <tr><th></th>{head}</tr>",
        "  </thead>",
        "  <tbody>",
    ]
    spacer_done = False
    for row in rows:
        is_reference = row.name in ("Finetuned", "Retain")
        if not is_reference and not spacer_done:
            lines.append(f'    <tr><td colspan="{len(metrics) + 1}"> </td></tr>')
            spacer_done = True
        tag = "th" if is_reference else "td"
        cells = "".join(f"<td>{cell(row, m)}</td>" for m in metrics)
        lines.append(f"    <tr><{tag}>{row.name}</{tag}>{cells}</tr>")
    lines += ["  </tbody>", "</table>", ""]
    return "\n".join(lines)


UNCHANGED = 5e-4
"""|Δ model_utility| below this, with forget_quality within 1 %, reads as no change."""


def fired_rate(logs: dict[str, list[list[dict]]], label: str) -> float | None:
    """The share of optimizer steps, over all seeds, where GRU fired."""
    entries = [entry for run in logs.get(label, []) for entry in run]
    if not entries:
        return None
    return sum(entry["gru/fired"] for entry in entries) / len(entries)


def verdicts(rows: Sequence[Row], logs: dict | None = None) -> list[str]:
    """Per GRU row: did it raise model_utility at equal or better forget_quality?

    Compares means over seeds, the question the paper's claim poses; with the
    Trainer logs, also says how often GRU fired.
    """
    lines = []
    for row in rows:
        base = row.base
        if base is None:
            continue
        utility, base_utility = row.mean("model_utility"), base.mean("model_utility")
        quality, base_quality = row.mean("forget_quality"), base.mean("forget_quality")
        if None in (utility, base_utility, quality, base_quality):
            continue
        gain = utility - base_utility
        ratio = quality / base_quality if base_quality > 0 else math.inf
        same_utility, same_quality = abs(gain) < UNCHANGED, abs(ratio - 1.0) < 0.01
        if same_utility and same_quality:
            answer = "no measurable change"
        elif gain > 0 and quality >= base_quality:
            answer = "yes, higher utility at equal or better forget quality"
        elif same_utility:
            side = "better" if ratio > 1 else "worse"
            answer = f"no change in utility, {side} forget quality"
        else:
            answer = "no" + (", lower utility" if gain < 0 else "")
            answer += ", worse forget quality" if quality < base_quality else ""
        fired = fired_rate(logs or {}, row.label)
        when = "" if fired is None else f" (GRU fired on {fired:.0%} of steps)"
        lines.append(
            f"- {row.name} vs {base.name}: model_utility {gain:+.4f}, "
            f"forget_quality ×{ratio:.2g} — {answer}{when}"
        )
    return lines


def muse_verdicts(rows: Sequence[Row], logs: dict | None = None) -> list[str]:
    """Per GRU row: how far each MUSE metric moved against the base, as facts.

    MUSE asks whether forget_*_ROUGE fell (forgetting) while retain_knowmem_ROUGE
    held; means over seeds, and how often GRU fired when the logs are there.
    """
    lines = []
    for row in rows:
        if row.base is None:
            continue
        changes = [
            f"{metric} {_number(metric, row.mean(metric) - row.base.mean(metric), '+')}"
            for metric in MUSE_CHANGES
            if row.mean(metric) is not None and row.base.mean(metric) is not None
        ]
        fired = fired_rate(logs or {}, row.label)
        when = "" if fired is None else f" (GRU fired on {fired:.0%} of steps)"
        if changes:
            lines.append(f"- {row.name} vs {row.base.name}: {', '.join(changes)}{when}")
    return lines


def muse_markdown(rows: Sequence[Row], logs: dict | None = None) -> str:
    """One leaderboard table per data split, each followed by its GRU rows' changes."""
    if not rows:
        return ""
    parts = ["", "## MUSE", ""]
    for split, split_rows in by_split(rows):
        parts.append(leaderboard_markdown(split_rows, split, muse_metrics(split_rows)))
        found = muse_verdicts(split_rows, logs)
        if found:
            parts += [f"{split}: {MUSE_QUESTION}", "", *found, ""]
    return "\n".join(parts)


def lm_eval_markdown(rows: Sequence[Row]) -> str:
    """A pipe table of each task's accuracy (WMDP's forgetting, MMLU's utility)."""
    if not rows:
        return ""
    table = plain_table(rows, lm_eval_metrics(rows))
    return f"\n## lm-eval\n\n{LM_EVAL_NOTE}\n\n{table}"


def utility_markdown(rows: Sequence[Row]) -> str:
    """model_utility beside the harmonic mean of each of its three data sets."""
    groups = [f"utility_{group}" for group in UTILITY_PARTS]
    if not any(row.mean(group) is not None for row in rows for group in groups):
        return ""
    lines = [
        "",
        "## model_utility's parts",
        "",
        "Each part is the harmonic mean of its set's probability, ROUGE and truth "
        "ratio; model_utility is the harmonic mean of all nine.",
        "",
        "| method | model_utility | " + " | ".join(UTILITY_PARTS) + " |",
        "|---" * (len(groups) + 2) + "|",
    ]
    for row in rows:
        cells = [cell(row, metric) for metric in ("model_utility", *groups)]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plain_table(rows: Sequence[Row], metrics: Sequence[str] = METRICS) -> str:
    """The same cells as a pipe table, for the console."""
    lines = [
        "| method | seeds | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 2) + "|",
    ]
    for row in rows:
        cells = " | ".join(cell(row, m) for m in metrics)
        lines.append(f"| {row.name} | {row.seeds} | {cells} |")
    return "\n".join(lines) + "\n"


def write_csv(
    rows: Sequence[Row], path: Path, columns: Sequence[str] = TOFU_CSV_COLUMNS
) -> None:
    """Means and standard deviations per row, plus the base each GRU row has (and,
    led by a ``split`` column, the data split where rows have one)."""
    splits = any(row.split for row in rows)
    header = ["split"] if splits else []
    header += ["method", "base", "seeds"]
    for metric in columns:
        header += [f"{metric}_mean", f"{metric}_std"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            line = [row.split] if splits else []
            line += [row.name, row.base.name if row.base else "", row.seeds]
            for metric in columns:
                line += [row.mean(metric), row.std(metric)]
            writer.writerow(["" if value is None else value for value in line])


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise SystemExit(
            "gru-plugin report: plots need matplotlib; pip install 'gru-plugin[report]'"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(rows: Sequence[Row], path: Path) -> None:
    """forget_quality (log) against model_utility, an arrow from base to +GRU."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    points = {}
    for row in rows:
        quality, utility = row.mean("forget_quality"), row.mean("model_utility")
        if quality is None or utility is None or quality <= 0:
            continue
        points[row.label] = (utility, quality)
        marker = "*" if row.name in ("Finetuned", "Retain") else "o"
        ax.scatter(utility, quality, marker=marker, s=60, zorder=3)
        ax.annotate(
            row.name,
            (utility, quality),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    for row in rows:
        if row.base and row.label in points and row.base.label in points:
            ax.annotate(
                "",
                xy=points[row.label],
                xytext=points[row.base.label],
                arrowprops={"arrowstyle": "->", "color": "black"},
            )
    ax.set_yscale("log")
    ax.set_ylim(top=3.0)  # forget_quality is a p-value: at most 1
    ax.set_xlabel("model_utility (higher is better)")
    ax.set_ylabel("forget_quality (log; higher is better)")
    ax.set_title("TOFU: each method → its +GRU variant (mean over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_gru_logs(dirs: Sequence[Path]) -> dict[str, list[list[dict]]]:
    """Per label, each seed's Trainer log entries that carry ``gru/`` keys."""
    logs: dict[str, list[list[dict]]] = {}
    for label, path in _labelled(dirs, "trainer_state.json"):
        history = json.loads(path.read_text()).get("log_history", [])
        entries = [entry for entry in history if "gru/cos" in entry]
        if entries:
            logs.setdefault(label, []).append(entries)
    return logs


def plot_gru_trace(logs: dict[str, list[list[dict]]], path: Path) -> None:
    """``gru/cos`` per step (one line per seed) and the fired rate over seeds."""
    plt = _pyplot()
    fig, (cos_ax, fired_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for index, (label, runs) in enumerate(sorted(logs.items())):
        color = f"C{index % 10}"
        name = gru_name(label)
        for seed, entries in enumerate(runs):
            steps = [entry["step"] for entry in entries]
            cos_ax.plot(
                steps,
                [entry["gru/cos"] for entry in entries],
                color=color,
                alpha=0.7,
                label=name if seed == 0 else None,
            )
        by_step: dict[int, list[float]] = {}
        for entries in runs:
            for entry in entries:
                by_step.setdefault(entry["step"], []).append(entry["gru/fired"])
        steps = sorted(by_step)
        fired_ax.step(
            steps,
            [statistics.fmean(by_step[s]) for s in steps],
            where="mid",
            color=color,
            label=name,
        )
    cos_ax.axhline(0.0, color="black", linewidth=0.8)
    cos_ax.set_ylabel("gru/cos  ⟨g,r⟩/‖g‖‖r‖")
    cos_ax.legend(fontsize=8)
    fired_ax.set_ylabel("gru/fired (mean over seeds)")
    fired_ax.set_xlabel("optimizer step")
    fired_ax.set_ylim(-0.05, 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class Results:
    """What the folders hold: each benchmark's rows (any may be empty), GRU's logs."""

    tofu: list[Row]
    muse: list[Row]
    lm_eval: list[Row]
    logs: dict[str, list[list[dict]]]

    def csv_files(self) -> dict[str, tuple[list[Row], Sequence[str]]]:
        """Each CSV file's rows and columns, for the benchmarks found."""
        files = {
            "table.csv": (self.tofu, TOFU_CSV_COLUMNS),
            "muse.csv": (self.muse, muse_metrics(self.muse)),
            "lm_eval.csv": (self.lm_eval, lm_eval_metrics(self.lm_eval)),
        }
        return {
            name: (rows, columns) for name, (rows, columns) in files.items() if rows
        }


def load_results(dirs: Sequence[Path]) -> Results:
    """Every benchmark's rows below ``dirs``; exits naming the files looked for when
    there is none of them."""
    results = Results(
        tofu=load_rows(dirs),
        muse=load_rows(dirs, MUSE_FILE, split_of=muse_split),
        lm_eval=load_rows(dirs, *LM_EVAL_FILES),
        logs=load_gru_logs(dirs),
    )
    if not (results.tofu or results.muse or results.lm_eval):
        raise SystemExit(
            f"gru-plugin report: no {TOFU_FILE}, {MUSE_FILE} or {LM_EVAL_FILES[0]} "
            f"under {', '.join(map(str, dirs))}. The host's src/eval.py writes "
            f"{TOFU_FILE} with experiment=eval/tofu/default, {MUSE_FILE} with "
            f"experiment=eval/muse/default and {LM_EVAL_FILES[0]} with "
            "experiment=eval/wmdp/default (eval=lm_eval); lm_eval --output_path "
            "writes its own results_<date>.json (<name>_<date>.json for a "
            "<name>.json path), read as well."
        )
    return results


def write_report(
    results: Results,
    out: Path,
    split: str = "forget10",
    trajectories: Path | None = None,
) -> list[str]:
    """Write table.md, the CSV files and the plots into ``out``; return TOFU's
    verdicts.

    With ``trajectories`` (evals along each run, see ``gru_plugin.trajectory``),
    table.md also compares model_utility at matched forget_quality,
    ``paths.png`` draws the paths and ``paths.csv`` lists their points.
    """
    rows, logs = results.tofu, results.logs
    out.mkdir(parents=True, exist_ok=True)
    found = verdicts(rows, logs)
    summary = (
        "\nDoes GRU raise model_utility at equal or better forget_quality "
        "(endpoints, means over seeds)?\n\n" + "\n".join(found) + "\n"
        if found
        else ""
    )
    if trajectories is not None:
        from gru_plugin import trajectory

        paths = trajectory.load_paths(trajectories)
        comparisons = trajectory.compare(paths)
        summary += "\n## Along the way\n\n" + trajectory.markdown(comparisons)
        trajectory.plot_paths(paths, comparisons, out / "paths.png")
        trajectory.write_paths_csv(paths, out / "paths.csv")
    tofu = leaderboard_markdown(rows, split) + utility_markdown(rows) if rows else ""
    muse = muse_markdown(results.muse, logs)
    (out / "table.md").write_text(
        tofu + summary + muse + lm_eval_markdown(results.lm_eval)
    )
    for name, (table_rows, columns) in results.csv_files().items():
        write_csv(table_rows, out / name, columns)
    if rows:
        plot_tradeoff(rows, out / "tradeoff.png")
    if logs:
        plot_gru_trace(logs, out / "gru_trace.png")
    return found


def report(
    dirs: Sequence[Path],
    out: Path,
    split: str = "forget10",
    trajectories: Path | None = None,
) -> tuple[list[Row], list[str]]:
    """``write_report`` of what ``dirs`` hold; return TOFU's rows and verdicts."""
    results = load_results(dirs)
    return results.tofu, write_report(results, out, split, trajectories)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", type=Path, help="folders of host evals")
    parser.add_argument("--out", type=Path, default=Path("report"))
    parser.add_argument("--forget-split", default="forget10", help="table header")
    parser.add_argument(
        "--trajectories",
        type=Path,
        help="evals along each run: <label>/seed<N>/step<S>",
    )


def run(args: argparse.Namespace) -> None:
    results = load_results(args.dirs)
    found = write_report(results, args.out, args.forget_split, args.trajectories)
    if results.tofu:
        print(plain_table(results.tofu))
        print("\n".join(found))
    for split, rows in by_split(results.muse):
        print(f"\nMUSE {split}\n\n{plain_table(rows, muse_metrics(rows))}")
        print("\n".join(muse_verdicts(rows, results.logs)))
    if results.lm_eval:
        lm_eval = results.lm_eval
        print(f"\nlm-eval\n\n{plain_table(lm_eval, lm_eval_metrics(lm_eval))}")
    written = ["table.md", *results.csv_files()]
    if results.tofu or results.logs:
        written.append("plots")
    print(f"wrote {', '.join(written[:-1])} and {written[-1]} to {args.out}")
