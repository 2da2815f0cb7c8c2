"""Hydra discovers this module by scanning the ``hydra_plugins`` namespace.

It adds our configs to every Hydra app's search path and, only inside the
open-unlearning host (whose ``trainer`` module is already imported when Hydra
starts), registers the ``gru_plugin.GRU`` handler. Anything heavier is imported
lazily, so unrelated Hydra apps pay nothing and cannot be broken by a missing host.
"""

import sys

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

CONFIGS = "pkg://gru_plugin.configs"


class GRUSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="gru-plugin", path=CONFIGS)
        if hasattr(sys.modules.get("trainer"), "TRAINER_REGISTRY"):
            from gru_plugin.host import register_with_loaded_host

            register_with_loaded_host()
