"""The pluggy manager: built-in strategies plus those of installed packages.

Installed packages (entry-point group ``gru_plugin``) are loaded only when a GRU run
first asks for a strategy, so a package that fails to import never touches a run
without GRU; in a GRU run it is skipped with a warning (simonw/llm's lazy manager).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import pluggy

from gru_plugin import hookspecs, strategies
from gru_plugin.rectify import Coefficient

ENTRY_POINT_GROUP = "gru_plugin"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenPlugin:
    """An installed package whose ``gru_plugin`` entry point failed to load."""

    package: str
    entry_point: str
    error: Exception

    def __str__(self) -> str:
        error = f"{type(self.error).__name__}: {self.error}"
        return f"{self.package} (entry point {self.entry_point}: {error})"


class StrategyPlugins(pluggy.PluginManager):
    """The built-in strategies, plus installed packages' once ``load_installed``
    ran; ``broken`` lists the packages that failed to load."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.register(strategies, name="gru_plugin.strategies")
        self.broken: list[BrokenPlugin] = []

    def load_installed(self) -> None:
        """Register every entry point of the group; warn about and skip those that
        fail to import or to register."""
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            plugin = None
            try:
                plugin = entry_point.load()
                self.register(plugin, name=entry_point.name)
                self.check_pending()
            except Exception as error:
                if plugin is not None and self.is_registered(plugin):
                    self.unregister(plugin)
                broken = BrokenPlugin(
                    package=getattr(entry_point.dist, "name", "?"),
                    entry_point=f"{entry_point.name} = {entry_point.value}",
                    error=error,
                )
                self.broken.append(broken)
                logger.warning("GRU: skipping the strategy package %s", broken)

    def strategies(self) -> dict[str, Callable[..., Coefficient]]:
        """Every registered strategy factory by name; the first registration of a
        name wins, and the built-ins register first, so none can be shadowed."""
        found: dict[str, Callable[..., Coefficient]] = {}

        def register(name: str, factory: Callable[..., Coefficient]) -> None:
            found.setdefault(name, factory)

        self.hook.register_strategies(register=register)
        return found


@functools.cache
def plugin_manager() -> StrategyPlugins:
    """The process's manager, built when a strategy is first asked for."""
    manager = StrategyPlugins()
    manager.load_installed()
    return manager


def available_strategies() -> dict[str, Callable[..., Coefficient]]:
    """Every strategy this process can use, by name."""
    return plugin_manager().strategies()


def make_strategy(name: str, options: dict | None = None) -> Coefficient:
    """Build the named strategy, or fail naming the setting and the choices (and
    the installed packages that failed to load, which may have provided it)."""
    manager = plugin_manager()
    factories = manager.strategies()
    if name not in factories:
        message = f"gru.strategy={name!r} is not a registered strategy"
        if manager.broken:
            failed = "; ".join(str(broken) for broken in manager.broken)
            raise ValueError(
                f"{message}, and these installed strategy packages failed to load: "
                f"{failed}. Fix or reinstall the package that provides {name!r}, "
                f"or choose one of {sorted(factories)}"
            )
        raise ValueError(
            f"{message}; choose one of {sorted(factories)} or install the plugin "
            f"that provides it (entry-point group {ENTRY_POINT_GROUP!r})"
        )
    try:
        return factories[name](**(options or {}))
    except TypeError as error:
        raise ValueError(f"gru.strategy_args for {name!r}: {error}") from error
