"""Point the host's hub datasets at a local folder of TOFU json files.

The host loads every dataset with ``datasets.load_dataset(path=locuslab/TOFU,
name=<config>)``; the nodes sit deep inside the data and metric configs. This
composes the run's config, finds each such node and returns the overrides that
read ``<data_dir>/<config>.json`` instead, via the ``json`` builder. Without a
local folder nothing changes and the host's hub defaults apply.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, ListConfig

TOFU_HUB = "locuslab/TOFU"
"""The hub dataset the host's TOFU configs name (``hf_args.path``)."""


def dataset_nodes(node, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """``(path, hf_args)`` of every dataset node of a composed config, however deep."""
    if isinstance(node, DictConfig):
        hf_args = node.get("hf_args") if "hf_args" in node else None
        if isinstance(hf_args, DictConfig):
            yield path, hf_args
        for key in node.keys():
            if key == "hydra" and not path:
                continue
            child = node._get_node(key)
            nested = isinstance(child, (DictConfig, ListConfig))
            if nested and not child._is_interpolation():
                yield from dataset_nodes(child, f"{path}.{key}" if path else key)


def local_data_overrides(cfg: DictConfig, data_dir: str | Path) -> list[str]:
    """Overrides that make every hub TOFU dataset of ``cfg`` read ``data_dir``."""
    data_dir = Path(data_dir).resolve()
    overrides = []
    for path, hf_args in dataset_nodes(cfg):
        if hf_args.get("path") != TOFU_HUB:
            continue
        data_file = data_dir / f"{hf_args.name}.json"
        if not data_file.exists():
            raise FileNotFoundError(
                f"{path}.hf_args names {hf_args.name!r}, but {data_file} does not "
                "exist: --data-dir must hold the TOFU json files"
            )
        overrides += [
            f"{path}.hf_args.path=json",
            f"+{path}.hf_args.data_files={data_file}",
        ]
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
