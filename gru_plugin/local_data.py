"""Point the host's hub datasets (TOFU, MUSE, WMDP) at a local folder.

The host loads every dataset with ``datasets.load_dataset(**hf_args)``; the nodes
sit deep inside the data and metric configs. This composes the run's config, finds
each such node and returns the overrides that read a local json file instead, via
the ``json`` builder (WMDP's corpora keep the host's ``text`` builder). Without a
local folder nothing changes and the host's hub defaults apply. The folder's
layout mirrors the hub's names:

    <dir>/<name>.json                     locuslab/TOFU, name=<name>
    <dir>/MUSE-News/<name>/<split>.json   muse-bench/MUSE-News, name, split
    <dir>/MUSE-News-Train/<split>.json    tamarsonha/MUSE-News-Train, split
    <dir>/wmdp-corpora/<file>.jsonl       data_files=data/wmdp/wmdp-corpora/<file>.jsonl
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, ListConfig

TOFU_HUB = "locuslab/TOFU"
"""The hub dataset the host's TOFU configs name (``hf_args.path``)."""
MUSE_HUB = re.compile(r"muse-bench/(?P<corpus>MUSE-\w+)")
MUSE_TRAIN_HUB = re.compile(r"tamarsonha/(?P<corpus>MUSE-\w+-Train)")
WMDP_CORPORA = "data/wmdp/wmdp-corpora/"
"""Where the host's WMDP configs expect the corpora (``scripts/download``)."""

DATASET_ARG_KEYS = ("hf_args", "few_shot_dataset_hf_args")
"""The keys under which the host's dataset configs hold ``load_dataset``'s args."""


def dataset_nodes(node, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """``(path, args)`` of every ``load_dataset`` node of a composed config, however
    deep; ``path`` ends in the node's own key (``...args.hf_args``)."""
    if not isinstance(node, DictConfig):
        return
    for key in node.keys():
        if key == "hydra" and not path:
            continue
        child = node._get_node(key)
        child_path = f"{path}.{key}" if path else key
        if key in DATASET_ARG_KEYS and isinstance(child, DictConfig):
            yield child_path, child
        elif isinstance(child, DictConfig | ListConfig):
            if not child._is_interpolation():
                yield from dataset_nodes(child, child_path)


def local_file(args: DictConfig, data_dir: Path) -> Path | None:
    """The local copy of the dataset ``args`` names, or None for no known hub."""
    hub = str(args.get("path"))
    if hub == TOFU_HUB:
        return data_dir / f"{args.name}.json"
    if match := MUSE_HUB.fullmatch(hub):
        return data_dir / match["corpus"] / args.name / f"{args.split}.json"
    if match := MUSE_TRAIN_HUB.fullmatch(hub):
        return data_dir / match["corpus"] / f"{args.split}.json"
    data_files = args.get("data_files")
    if hub == "text" and str(data_files).startswith(WMDP_CORPORA):
        return data_dir / "wmdp-corpora" / Path(data_files).name
    return None


def local_data_overrides(cfg: DictConfig, data_dir: str | Path) -> list[str]:
    """Overrides that make every hub dataset of ``cfg`` read ``data_dir``."""
    data_dir = Path(data_dir).resolve()
    overrides = []
    for path, args in dataset_nodes(cfg):
        data_file = local_file(args, data_dir)
        if data_file is None:
            continue
        if not data_file.exists():
            raise FileNotFoundError(
                f"{path} names {args.path} {args.get('name') or ''} "
                f"{args.get('split') or args.get('data_files')}, but {data_file} "
                "does not exist: --data-dir must hold the benchmark's local copy "
                "(TOFU json files; MUSE and WMDP: python -m gru_plugin.shaped_data)"
            )
        if args.path == "text":  # WMDP: the host's own builder, another file
            overrides.append(f"{path}.data_files={data_file}")
            continue
        overrides += [f"{path}.path=json", f"++{path}.data_files={data_file}"]
        if args.get("split") != "train":  # one json file is the builder's "train"
            overrides.append(f"++{path}.split=train")
    return overrides


def compose_local_data_overrides(
    host_root: str | Path,
    config_name: str,
    overrides: list[str],
    data_dir: str | Path,
) -> list[str]:
    """Compose the host config with ``overrides`` and return the data overrides."""
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(host_root, "configs").resolve())
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name, overrides=overrides)
    return local_data_overrides(cfg, data_dir)
