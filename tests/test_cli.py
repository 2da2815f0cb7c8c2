"""gru-unlearn finds the host or says how to point at it."""

import os
import subprocess
import sys

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

from gru_plugin.cli import check_plugin_discovered, find_host


def test_missing_host_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("OPEN_UNLEARNING_ROOT", str(tmp_path))
    with pytest.raises(SystemExit, match="OPEN_UNLEARNING_ROOT"):
        find_host(None)


def test_host_from_flag(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("")
    assert find_host(str(tmp_path)) == tmp_path.resolve()


def test_installed_plugin_is_discovered():
    """Hydra's plugin scan finds our search-path plugin, so ``+gru=default`` is
    seen, and ``check_plugin_discovered`` agrees: it returns instead of exiting."""
    found = Plugins.instance().discover(SearchPathPlugin)
    names = [f"{plugin.__module__}.{plugin.__qualname__}" for plugin in found]
    assert "hydra_plugins.gru_plugin.searchpath.GRUSearchPathPlugin" in names
    assert check_plugin_discovered() is None


def test_check_names_a_shadowed_plugin_namespace(tmp_path):
    """A foreign hydra_plugins/__init__.py hides our plugin; check says so."""
    shadow = tmp_path / "shadow" / "hydra_plugins"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    code = "from gru_plugin.cli import gru_plugin; gru_plugin(['check', '--host', '.'])"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "Hydra does not discover hydra_plugins.gru_plugin" in done.stdout
    assert str(shadow) in done.stdout
    assert "no open-unlearning checkout" in done.stdout
