"""Third-party strategies through the pluggy hook: loaded only when a GRU run asks
for a strategy, built-ins never shadowed, broken packages skipped and named."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from environments import install_fake_package

from gru_plugin import rectify_
from gru_plugin.hookspecs import hookimpl
from gru_plugin.plugins import available_strategies, make_strategy

HALF = """
from gru_plugin.hookspecs import hookimpl

@hookimpl
def register_strategies(register):
    def make(fraction=0.5):
        return lambda dot, gg, rr: fraction * dot / rr if dot < 0 and rr > 0 else 0.0
    register("half", make)
"""
BROKEN = "raise RuntimeError('boom: a dependency is missing')\n"
MISSPELLED_HOOK = """
from gru_plugin.hookspecs import hookimpl

@hookimpl
def register_strategy(register):
    register("typo", None)
"""


class HalfProjection:
    @hookimpl
    def register_strategies(self, register):
        def make(fraction: float = 0.5):
            def coefficient(dot, grad_sq, ref_sq):
                return fraction * dot / ref_sq if dot < 0 and ref_sq > 0 else 0.0

            return coefficient

        register("half", make)
        register("project", make)  # an attempt to shadow a built-in


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A site-packages folder on sys.path with a working and a broken package."""
    site = tmp_path / "site"
    site.mkdir()
    install_fake_package(site, "gru-half", HALF)
    install_fake_package(site, "gru-broken", BROKEN)
    monkeypatch.syspath_prepend(str(site))
    return site


def test_registered_strategy_is_used_and_cannot_shadow(strategy_plugins):
    strategy_plugins.register(HalfProjection(), name="half-test")
    assert "half" in available_strategies()
    g, r = [torch.tensor([-2.0, 0.0])], [torch.tensor([1.0, 0.0])]
    stats = rectify_(g, r, make_strategy("half", {"fraction": 0.5}))
    assert stats.coef == -1.0 and torch.equal(g[0], torch.tensor([-1.0, 0.0]))
    g = [torch.tensor([-2.0, 0.0])]
    rectify_(g, r, make_strategy("project"))
    assert torch.equal(g[0], torch.tensor([0.0, 0.0]))


@pytest.mark.parametrize("run", ["first", "second"])
def test_each_test_gets_a_fresh_manager(strategy_plugins, run):
    """Both runs register a strategy on their manager; whichever runs second fails
    if the first one's registration leaked into it."""
    assert [name for name, _ in strategy_plugins.list_name_plugin()] == [
        "gru_plugin.strategies"
    ]
    assert set(available_strategies()) == {"project", "cosclip"}
    strategy_plugins.register(HalfProjection(), name="half-test")
    assert "half" in available_strategies()  # the fixture's manager is the one used


def test_broken_package_is_skipped_with_a_warning(site, strategy_plugins, caplog):
    with caplog.at_level(logging.WARNING, logger="gru_plugin.plugins"):
        strategy_plugins.load_installed()
    assert "skipping the strategy package gru-broken" in caplog.text
    assert "RuntimeError: boom: a dependency is missing" in caplog.text
    assert {"project", "cosclip", "half"} <= set(available_strategies())
    assert make_strategy("half", {"fraction": 1.0})(-1.0, 1.0, 1.0) == -1.0


def test_missing_strategy_names_the_broken_package(site, strategy_plugins):
    strategy_plugins.load_installed()
    with pytest.raises(ValueError) as error:
        make_strategy("normcap")
    message = str(error.value)
    assert "gru.strategy='normcap' is not a registered strategy" in message
    assert "gru-broken (entry point gru_broken = gru_broken: RuntimeError: boom" in (
        message
    )
    assert "gru-half" not in message and "'half'" in message


def test_package_with_a_misspelled_hook_is_skipped(site, strategy_plugins):
    install_fake_package(site, "gru-typo", MISSPELLED_HOOK)
    strategy_plugins.load_installed()
    assert sorted(broken.package for broken in strategy_plugins.broken) == [
        "gru-broken",
        "gru-typo",
    ]
    assert "half" in available_strategies()
    assert not any(
        name in ("gru_typo", "gru_broken")
        for name, _ in strategy_plugins.list_name_plugin()
    )


LAZY = """
import logging, sys
logging.basicConfig(stream=sys.stdout, format="%(message)s")
import gru_plugin.host, gru_plugin.plugins, hydra_plugins.gru_plugin.searchpath
print("imported:", "gru_half" in sys.modules)
from gru_plugin.plugins import make_strategy
make_strategy("half")
print("asked:", "gru_half" in sys.modules)
"""


def test_installed_packages_load_at_the_first_strategy_asked_for(site):
    """Importing our modules (as the Hydra hook does in every host run) loads no
    installed strategy package; the first strategy a GRU run asks for does, and
    names the broken one."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LAZY)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "imported: False" and lines[-1] == "asked: True", lines
    assert "skipping the strategy package gru-broken" in lines[1], lines
