"""``gru-plugin upstream``: host-style files that pass the host's ``make quality``
and train in a copy of the host with gru-plugin made unimportable."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from host_runs import CPU_RUN, GRU_PLUGIN, HOST, TOFU

from gru_plugin.cli import OFFLINE_ENV
from gru_plugin.local_data import compose_local_data_overrides
from gru_plugin.upstream import METHODS

# The host pins ruff 0.6.9 (its [dev] extra); .ci/install puts it here.
HOST_RUFF = Path(sys.prefix) / "host-ruff" / "bin" / "ruff"
QUALITY_PATHS = ["scripts", "src", "setup.py", "setup_data.py"]  # its Makefile's
FINDING = re.compile(r"Would reformat: |\S+:\d+:\d+: ")
"""A line of ruff's output that names one finding (not a summary)."""

# Runs the host's train.py as if gru-plugin were not installed: importing it fails
# and Hydra does not see our plugin. The generated files must stand alone.
WITHOUT_PLUGIN = """
import pkgutil, runpy, sys
from importlib.abc import MetaPathFinder

class Unavailable(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "gru_plugin":
            raise ModuleNotFoundError(f"{name} is blocked for this test")

# Hydra finds plugins by walking hydra_plugins' folders, not through sys.meta_path.
walk_packages = pkgutil.walk_packages

def without_ours(*args, **kwargs):
    for found in walk_packages(*args, **kwargs):
        if not found.name.startswith("hydra_plugins.gru_plugin"):
            yield found

pkgutil.walk_packages = without_ours
sys.meta_path.insert(0, Unavailable())
sys.path.insert(0, "src")
sys.argv = ["src/train.py", *sys.argv[1:]]
runpy.run_path("src/train.py", run_name="__main__")
"""


@pytest.fixture(scope="module")
def bundled_host(tmp_path_factory) -> Path:
    host = tmp_path_factory.mktemp("host") / "open-unlearning"
    ignore = shutil.ignore_patterns(".git", "saves", "__pycache__", ".ruff_cache")
    shutil.copytree(HOST, host, ignore=ignore)
    done = subprocess.run(
        [GRU_PLUGIN, "upstream", f"--out={host}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return host


def test_bundle_has_the_host_layout(bundled_host):
    for name in METHODS:
        assert (bundled_host / f"configs/trainer/{name}_GRU.yaml").is_file()
    assert (bundled_host / "src/trainer/unlearn/gru.py").is_file()
    assert (bundled_host / "community/methods/GRU/README.md").is_file()
    assert os.access(bundled_host / "community/methods/GRU/run.sh", os.X_OK)
    init = (bundled_host / "src/trainer/__init__.py").read_text()
    assert "_register_trainer(NPO_GRU)" in init


def quality_findings(root: Path) -> set[str]:
    """What the host's ``make quality`` flags in ``root``, one line per finding."""
    findings = set()
    for command in (["check", "--output-format=concise"], ["format", "--check"]):
        done = subprocess.run(
            [str(HOST_RUFF), *command, "--no-cache", *QUALITY_PATHS],
            cwd=root,
            capture_output=True,
            text=True,
        )
        lines = (done.stdout + done.stderr).splitlines()
        found = {line for line in lines if FINDING.match(line)}
        assert done.returncode == 0 or found, done.stdout + done.stderr
        findings |= found
    return findings


def test_bundle_passes_the_hosts_make_quality(bundled_host):
    """The bundle adds no finding; host next's own src/train.py already fails the
    format check of the host's ruff pin, so the host's findings are subtracted."""
    if not HOST_RUFF.is_file():
        pytest.skip(f"ruff 0.6.9 (the host's) not found at {HOST_RUFF}: .ci/install")
    added = quality_findings(bundled_host) - quality_findings(HOST)
    assert not added, "\n".join(sorted(added))


def test_bundle_trains_without_the_plugin(bundled_host, tiny_model, tmp_path):
    out = tmp_path / "run"
    overrides = [
        "experiment=unlearn/tofu/default",
        "trainer=NPO_GRU",
        "holdout_split=holdout01",
        *CPU_RUN,
        f"model.model_args.pretrained_model_name_or_path={tiny_model}",
        f"model.tokenizer_args.pretrained_model_name_or_path={tiny_model}",
        "task_name=upstream",
        f"paths.output_dir={out}",
    ]
    overrides += compose_local_data_overrides(
        bundled_host, "unlearn.yaml", overrides, TOFU
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_PLUGIN,
            "--config-name=unlearn.yaml",
            *overrides,
        ],
        cwd=bundled_host,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gru_plugin is blocked" not in done.stderr
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if "gru/cos" in entry]
    assert len(logged) == 3 and all(entry["gru/cos_after"] >= -1e-6 for entry in logged)
