"""The open-unlearning adapter: one registry entry that wraps any method.

The entry is a factory rather than a class, so the method to wrap is looked up in
the host's ``TRAINER_REGISTRY`` when the trainer is built: a class that a third
party registers after this plugin loaded still gets its GRU variant. Its name,
``gru_plugin.GRU``, cannot be a class name, so it never replaces a trainer someone
else registered (such as the host's own ``GRU``, open-unlearning pull request #83).
The trainer code is imported only when a GRU trainer is built.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

from gru_plugin.settings import GRUSettings

HANDLER = "gru_plugin.GRU"
VARIANT_SUFFIX = "_GRU"


def host_registry() -> MutableMapping[str, Any] | None:
    """The host's live ``TRAINER_REGISTRY``, or None when the host is not loaded."""
    return getattr(sys.modules.get("trainer"), "TRAINER_REGISTRY", None)


def _to_plain(values: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return dict(values or {})
    if isinstance(values, DictConfig):
        return OmegaConf.to_container(values, resolve=True)
    return dict(values or {})


def resolve_method(name: str | None, registry: Mapping[str, Any]) -> type:
    """The host trainer class that ``gru.method`` names (``X_GRU`` means ``X``)."""
    if not name:
        raise ValueError(
            "gru.method is empty: set it to the host trainer to wrap, e.g. "
            "trainer.method_args.gru.method=NPO"
        )
    candidates = [name]
    if name.endswith(VARIANT_SUFFIX):
        candidates.append(name.removesuffix(VARIANT_SUFFIX))
    for candidate in candidates:
        found = registry.get(candidate)
        if isinstance(found, type):
            return found
    methods = sorted(k for k, v in registry.items() if isinstance(v, type))
    raise ValueError(
        f"gru.method={name!r} is not a trainer in the host's TRAINER_REGISTRY; "
        f"registered: {methods}. When a trainer config's file name differs from its "
        "handler, set trainer.method_args.gru.method=<handler>"
    )


def build_gru_trainer(*, gru: Mapping[str, Any] | None = None, **trainer_kwargs):
    """Registry entry ``gru_plugin.GRU``: build the GRU variant of ``gru.method``."""
    from gru_plugin.trainer import gru_trainer_class

    settings = GRUSettings.from_mapping(_to_plain(gru))
    registry = host_registry()
    if registry is None:
        raise RuntimeError(
            "the open-unlearning host is not loaded (no 'trainer' module with a "
            "TRAINER_REGISTRY); run through the host's src/train.py or gru-unlearn"
        )
    base = resolve_method(settings.method, registry)
    return gru_trainer_class(base)(gru_settings=settings, **trainer_kwargs)


def register(registry: MutableMapping[str, Any]) -> None:
    """Add our handler to ``registry``; an entry already there is kept."""
    registry.setdefault(HANDLER, build_gru_trainer)


def register_with_loaded_host() -> bool:
    """Register into the host if its ``trainer`` module is loaded; True if done."""
    registry = host_registry()
    if registry is None:
        return False
    register(registry)
    return True
