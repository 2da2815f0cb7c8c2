"""``gru-unlearn``: run the host's ``src/train.py`` with the plugin active.

    gru-unlearn [--host DIR] [--data-dir DIR] [--cpu] [--config-name NAME] OVERRIDE...

The host is found via ``--host`` or ``OPEN_UNLEARNING_ROOT``. ``--data-dir``
reads TOFU from local json files instead of the hub; ``--cpu`` adds the overrides
the host needs on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

DEFAULT_HOST = "~/open-unlearning"

CPU_OVERRIDES = [
    # What the host needs without a GPU: no flash-attn, no bitsandbytes optimizer,
    # no warm-up (the host divides by the GPU count), fp32.
    "model.model_args.attn_implementation=eager",
    "model.model_args.torch_dtype=float32",
    "trainer.args.bf16=false",
    "trainer.args.bf16_full_eval=false",
    "trainer.args.optim=adamw_torch",
    "trainer.args.warmup_epochs=0",
    # No tensorboard and no evaluation inside training (at start and every epoch).
    "trainer.args.report_to=none",
    "trainer.args.eval_on_start=false",
    "trainer.args.eval_strategy=no",
    "trainer.args.do_eval=false",
]
"""Hydra overrides for running the host's ``src/train.py`` on a CPU."""

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
"""Environment for runs with local model and data only (no hub look-ups)."""


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
    parser.add_argument("--cpu", action="store_true", help="add CPU_OVERRIDES")
    args, overrides = parser.parse_known_args(argv)
    if args.cpu:
        overrides = CPU_OVERRIDES + overrides
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
