"""A regular and an editable install of this working tree work alike: Hydra
discovers the plugin (gru-unlearn's own check passes) and ``+gru=default``
composes from the installed configs."""

from __future__ import annotations

import json
import subprocess
import sysconfig
from pathlib import Path

import pytest
from environments import MODES, REPO, isolated_env, make_environment

from gru_plugin.host import HANDLER

CHECK = """
import json, sys
from hydra import compose, initialize_config_dir
import gru_plugin.configs, hydra_plugins.gru_plugin.searchpath as hook
from gru_plugin.cli import check_plugin_discovered

check_plugin_discovered()
with initialize_config_dir(sys.argv[1], version_base=None):
    cfg = compose("config", ["+gru=default"])
print(json.dumps({
    "handler": cfg.trainer.handler,
    "gamma": cfg.gru.gamma,
    "hook": hook.__file__,
    "configs": gru_plugin.configs.__file__,
}))
"""


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    """The python of a throwaway environment per install mode, built once."""
    built: dict[str, Path] = {}

    def get(mode: str) -> Path:
        if mode not in built:
            built[mode] = make_environment(tmp_path_factory.mktemp(mode) / "env", mode)
        return built[mode]

    return get


def site_packages(python: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": python.parents[1]}))


@pytest.mark.parametrize("mode", MODES)
def test_plugin_is_discovered_and_plus_gru_composes(mode, environment, tmp_path):
    python = environment(mode)
    (tmp_path / "config.yaml").write_text("value: 1\n")
    done = subprocess.run(
        [python, "-c", CHECK, str(tmp_path)],
        cwd=tmp_path,
        env=isolated_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout)
    assert (found["handler"], found["gamma"]) == (HANDLER, 0.8)
    if mode == "editable":
        assert found["hook"] == str(REPO / "hydra_plugins/gru_plugin/searchpath.py")
        assert found["configs"] == str(REPO / "configs/__init__.py")
    else:
        site = str(site_packages(python))
        assert found["hook"].startswith(site) and found["configs"].startswith(site)


def test_regular_install_ships_every_module_and_config(environment):
    site = site_packages(environment("regular"))
    for source, target in [
        ("gru_plugin", "gru_plugin"),
        ("configs", "gru_plugin/configs"),
        ("hydra_plugins", "hydra_plugins"),
    ]:
        wanted = {
            path.relative_to(REPO / source)
            for path in (REPO / source).rglob("*")
            if path.suffix in (".py", ".yaml", ".md", ".sh")
        }
        shipped = {
            path.relative_to(site / target) for path in (site / target).rglob("*")
        }
        assert wanted <= shipped, f"not installed: {sorted(wanted - shipped)}"
