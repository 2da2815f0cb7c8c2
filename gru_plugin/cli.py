"""``gru-unlearn``: run the host's ``src/train.py`` with the plugin active.

    gru-unlearn [--host DIR] [--data-dir DIR] [--config-name NAME] OVERRIDE...

The host is found via ``--host`` or ``OPEN_UNLEARNING_ROOT``. ``--data-dir``
reads TOFU from local json files instead of the hub.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

DEFAULT_HOST = "~/open-unlearning"


def find_host(host: str | None) -> Path:
    """The host root from ``--host``, ``OPEN_UNLEARNING_ROOT`` or the default."""
    root = Path(host or os.environ.get("OPEN_UNLEARNING_ROOT") or DEFAULT_HOST)
    root = root.expanduser().resolve()
    if not (root / "src" / "train.py").is_file():
        raise SystemExit(
            f"gru-unlearn: no open-unlearning checkout at {root} (src/train.py is "
            "missing); pass --host DIR or set OPEN_UNLEARNING_ROOT"
        )
    return root


def check_plugin_discovered() -> None:
    """Fail loudly if Hydra would not see our plugin (``+gru`` would be a string)."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    found = Plugins.instance().discover(SearchPathPlugin)
    if not any(
        plugin.__module__.startswith("hydra_plugins.gru_plugin") for plugin in found
    ):
        raise SystemExit(
            "gru-unlearn: Hydra does not discover hydra_plugins.gru_plugin, so "
            "+gru=default would be ignored. Install the package with a regular "
            "'pip install gru-plugin' (not an editable install) and make sure no "
            "'hydra_plugins/__init__.py' on sys.path shadows the namespace."
        )


def gru_unlearn(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gru-unlearn", description=__doc__)
    parser.add_argument("--host", help="open-unlearning checkout")
    parser.add_argument("--data-dir", help="local folder of TOFU json files")
    parser.add_argument("--config-name", default="unlearn.yaml")
    args, overrides = parser.parse_known_args(argv)
    root = find_host(args.host)
    check_plugin_discovered()
    if args.data_dir:
        from gru_plugin.local_data import compose_local_data_overrides

        overrides += compose_local_data_overrides(
            root, args.config_name, overrides, args.data_dir
        )
    train_py = root / "src" / "train.py"
    sys.path.insert(0, str(train_py.parent))
    sys.argv = [str(train_py), f"--config-name={args.config_name}", *overrides]
    runpy.run_path(str(train_py), run_name="__main__")
