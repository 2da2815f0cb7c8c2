"""Console scripts: run the host's ``src/train.py``/``eval.py`` with the plugin.

    gru-unlearn [--host DIR] [--data-dir DIR] [--cpu] [--config-name NAME] OVERRIDE...
    gru-plugin eval [--host DIR] [--data-dir DIR] [--cpu] OVERRIDE...
    gru-plugin report DIR... [--out DIR]
    gru-plugin check [--host DIR]
    gru-plugin upstream --out HOST_CHECKOUT [--results table.md]

The host is found via ``--host`` or ``OPEN_UNLEARNING_ROOT``. ``--data-dir``
reads TOFU, MUSE and WMDP from a local folder instead of the hub (the layout of
``gru_plugin.local_data``; MUSE- and WMDP-shaped data come from
``python -m gru_plugin.shaped_data``); ``--cpu`` adds the overrides
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
    "++trainer.args.warmup_epochs=0",  # ++: only TOFU's experiment sets it
    # No tensorboard and no evaluation inside training (at start and every epoch).
    "trainer.args.report_to=none",
    "trainer.args.eval_on_start=false",
    "trainer.args.eval_strategy=no",
    "trainer.args.do_eval=false",
]
"""Hydra overrides for running the host's ``src/train.py`` on a CPU."""

CPU_EVAL_OVERRIDES = [
    "model.model_args.device_map=cpu",
    "model.model_args.attn_implementation=eager",
    "model.model_args.torch_dtype=float32",
]
"""Hydra overrides for the host's ``src/eval.py`` on a CPU (it asks for cuda)."""

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
            "+gru=default would be ignored. Install the package into this "
            "environment ('pip install gru-plugin', or 'pip install -e' for a "
            "checkout) and make sure no 'hydra_plugins/__init__.py' on sys.path "
            "shadows the namespace."
        )


def run_host_script(
    script: str,
    config_name: str,
    cpu_overrides: list[str],
    argv: list[str] | None,
    prog: str,
) -> None:
    """Run the host's ``src/<script>`` in this process, with our options applied;
    ``--cpu`` prepends ``cpu_overrides``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--host", help="open-unlearning checkout")
    parser.add_argument(
        "--data-dir", help="local copies of the hub's TOFU, MUSE and WMDP data"
    )
    parser.add_argument("--config-name", default=config_name)
    parser.add_argument("--cpu", action="store_true", help="add the CPU overrides")
    args, overrides = parser.parse_known_args(argv)
    if args.cpu:
        overrides = cpu_overrides + overrides
    root = find_host(args.host)
    check_plugin_discovered()
    if args.data_dir:
        from gru_plugin.local_data import compose_local_data_overrides

        overrides += compose_local_data_overrides(
            root, args.config_name, overrides, args.data_dir
        )
    entry = root / "src" / script
    sys.path.insert(0, str(entry.parent))
    sys.argv = [str(entry), f"--config-name={args.config_name}", *overrides]
    runpy.run_path(str(entry), run_name="__main__")


def gru_unlearn(argv: list[str] | None = None) -> None:
    run_host_script("train.py", "unlearn.yaml", CPU_OVERRIDES, argv, "gru-unlearn")


def check_installation(host: str | None) -> list[str]:
    """Each reason ``+gru=default`` would be ignored or fail here, with its fix.

    Hydra turns ``+gru=default`` into a plain string when it cannot see our
    config group, and the host then runs the base method; nothing of ours runs
    in that case to say so, hence this check.
    """
    problems = []
    try:
        check_plugin_discovered()
    except SystemExit as error:
        import hydra_plugins

        problems.append(f"{error} hydra_plugins is read from: {hydra_plugins.__path__}")
    try:
        root = find_host(host)
    except SystemExit as error:
        return [*problems, str(error)]
    from hydra import compose, initialize_config_dir

    from gru_plugin.host import HANDLER

    overrides = ["experiment=unlearn/tofu/default", "+gru=default"]
    try:
        with initialize_config_dir(str(root / "configs"), version_base=None):
            cfg = compose("unlearn.yaml", overrides)
    except Exception as error:  # any composition failure is the finding
        first_line = str(error).splitlines()[0]
        return [*problems, f"the host's unlearn.yaml does not compose: {first_line}"]
    if cfg.trainer.get("handler") != HANDLER or not hasattr(cfg.gru, "keys"):
        problems.append(
            f"composing {root}/configs/unlearn.yaml with +gru=default gives "
            f"trainer.handler={cfg.trainer.get('handler')!r}, gru={cfg.gru!r}: our "
            "config group is not on Hydra's search path; reinstall gru-plugin"
        )
    return problems


def gru_plugin(argv: list[str] | None = None) -> None:
    """``gru-plugin report|eval|check|upstream``."""
    from gru_plugin import report, upstream

    parser = argparse.ArgumentParser(prog="gru-plugin")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "eval", add_help=False, help="the host's src/eval.py; options of gru-unlearn"
    )
    report.add_arguments(commands.add_parser("report", help="tables and plots"))
    upstream.add_arguments(
        commands.add_parser("upstream", help="GRU as files for a host pull request")
    )
    check = commands.add_parser("check", help="will +gru=default work here?")
    check.add_argument("--host", help="open-unlearning checkout")
    args, rest = parser.parse_known_args(argv)
    if args.command == "eval":
        run_host_script(
            "eval.py", "eval.yaml", CPU_EVAL_OVERRIDES, rest, "gru-plugin eval"
        )
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "check":
        problems = check_installation(args.host)
        for problem in problems:
            print(f"problem: {problem}")
        if problems:
            raise SystemExit(1)
        print("ok: Hydra discovers gru-plugin and +gru=default composes in the host")
        return
    {"report": report.run, "upstream": upstream.run}[args.command](args)
