"""gru-unlearn finds the host or says how to point at it."""

import pytest

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
    check_plugin_discovered()
