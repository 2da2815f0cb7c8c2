"""An installed strategy package that fails to import: a run without GRU never
touches it; a GRU run names it in a warning, skips it and trains."""

from __future__ import annotations

import pytest
from environments import install_fake_package
from test_host_methods import assert_gru_run

LAUNCHER = """
import sys
sys.path.insert(0, {site!r})  # as if installed into this environment
from gru_plugin.cli import gru_unlearn
gru_unlearn()
"""
ERROR = "the broken strategy package was imported"


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("broken-package")
    site = root / "site"
    site.mkdir()
    install_fake_package(site, "gru-broken", f"raise RuntimeError({ERROR!r})\n")
    (root / "launch.py").write_text(LAUNCHER.format(site=str(site)))
    return str(root / "launch.py")


def test_base_run_never_imports_it(run_host, launcher):
    run = run_host("trainer=GradDiff", launcher=launcher)
    assert ERROR not in run.output and "gru-broken" not in run.output
    assert run.gru_logs == []
    assert (run.out / "model.safetensors").is_file()


def test_gru_run_names_it_and_trains(run_host, launcher):
    run = run_host("trainer=GradDiff", "+gru=default", launcher=launcher)
    assert "skipping the strategy package gru-broken" in run.output
    assert f"RuntimeError: {ERROR}" in run.output
    assert_gru_run(run)
