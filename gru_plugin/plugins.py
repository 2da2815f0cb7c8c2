"""The pluggy manager: built-in strategies plus those from installed plugins."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pluggy

from gru_plugin import hookspecs, strategies
from gru_plugin.rectify import Coefficient

ENTRY_POINT_GROUP = "gru_plugin"

pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
pm.add_hookspecs(hookspecs)
pm.register(strategies, name="gru_plugin.strategies")
if not getattr(sys, "_called_from_test", False):
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
pm.check_pending()


def available_strategies() -> dict[str, Callable[..., Coefficient]]:
    """Every registered strategy factory by name; the first registration of a name
    wins, and the built-ins register first, so no plugin can shadow them."""
    found: dict[str, Callable[..., Coefficient]] = {}

    def register(name: str, factory: Callable[..., Coefficient]) -> None:
        found.setdefault(name, factory)

    pm.hook.register_strategies(register=register)
    return found


def make_strategy(name: str, options: dict | None = None) -> Coefficient:
    """Build the named strategy, or fail naming the setting and the choices."""
    factories = available_strategies()
    if name not in factories:
        raise ValueError(
            f"gru.strategy={name!r} is not a registered strategy; choose one of "
            f"{sorted(factories)} or install the plugin that provides it "
            f"(entry-point group {ENTRY_POINT_GROUP!r})"
        )
    try:
        return factories[name](**(options or {}))
    except TypeError as error:
        raise ValueError(f"gru.strategy_args for {name!r}: {error}") from error
