import pytest

from gru_plugin import plugins


@pytest.fixture(autouse=True)
def strategy_plugins(monkeypatch) -> plugins.StrategyPlugins:
    """A fresh plugin manager per test, with the built-in strategies only: the
    packages installed here never leak into a test, and no test into another."""
    manager = plugins.StrategyPlugins()
    monkeypatch.setattr(plugins, "plugin_manager", lambda: manager)
    return manager
