"""The TOFU reproduction pipeline end to end, at smoke size, through the real host."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

from host_runs import HOST, REPO, TOFU

from gru_plugin.cli import OFFLINE_ENV


def test_smoke_pipeline_trains_evaluates_and_reports(tmp_path) -> None:
    out = tmp_path / "smoke"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "tofu_reproduction.py"),
        f"--host={HOST}",
        f"--data-dir={TOFU}",
        f"--out={out}",
        "--smoke",
    ]
    env = {**os.environ, **OFFLINE_ENV}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    with (out / "report" / "table.csv").open() as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["Finetuned", "Retain", "GradDiff", "GradDiff+GRU"]
    # The retain model against its own reference log: identical distributions.
    assert float(rows["Retain"]["forget_quality_mean"]) == 1.0
    for row in rows.values():
        assert 0.0 <= float(row["model_utility_mean"]) <= 1.0
        assert 0.0 < float(row["forget_quality_mean"]) <= 1.0
    assert rows["GradDiff+GRU"]["base"] == "GradDiff"
    for plot in ("tradeoff.png", "gru_trace.png"):
        assert (out / "report" / plot).stat().st_size > 0
    state_file = out / "unlearn" / "GradDiff_GRU" / "seed0" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert any("gru/cos" in entry for entry in state["log_history"])

    # Resumable: a second call finds every stage done and runs no host process.
    again = subprocess.run(command, env=env, capture_output=True, text=True)
    assert again.returncode == 0
    assert not re.search(r"^  \S+: \d+ s$", again.stdout, re.MULTILINE), again.stdout
