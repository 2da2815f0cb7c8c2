"""The installed Hydra plugin: our configs on the search path, other apps unharmed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

APP = """
import sys
import hydra

@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg):
    print("value", cfg.value, "gru" in cfg)
    heavy = ("torch", "gru_plugin.host", "gru_plugin.trainer", "gru_plugin.plugins")
    print("imported", [name for name in heavy if name in sys.modules])

main()
"""


def run_app(tmp_path, *overrides, app: str = APP):
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "config.yaml").write_text("value: 1\n")
    (tmp_path / "app.py").write_text(textwrap.dedent(app))
    return subprocess.run(
        [sys.executable, "app.py", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unrelated_app_runs_and_sees_our_search_path(tmp_path):
    done = run_app(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "value 1 False" in done.stdout
    assert "imported []" in done.stdout  # the plugin keeps torch and GRU out
    info = run_app(tmp_path, "--info", "searchpath")
    assert "gru-plugin" in info.stdout and "pkg://gru_plugin.configs" in info.stdout


def test_unrelated_app_with_a_module_named_trainer(tmp_path):
    """A 'trainer' module that is not the host's is left alone."""
    (tmp_path / "trainer.py").write_text("X = 1\n")
    done = run_app(tmp_path, app=APP.replace("import hydra", "import hydra, trainer"))
    assert done.returncode == 0, done.stderr
    assert "value 1 False" in done.stdout


def test_plus_gru_composes_in_any_app(tmp_path):
    done = run_app(tmp_path, "+gru=default")
    assert done.returncode == 0, done.stderr
    assert "value 1 True" in done.stdout
