"""Hook specifications: how third parties add rectification strategies.

A strategy is a factory ``make(**options) -> coefficient`` where
``coefficient(dot, grad_sq, ref_sq) -> coef`` and the rectified gradient is
``g − coef·r`` (see :mod:`gru_plugin.rectify`). Register it from a plugin module
exposed in the ``gru_plugin`` entry-point group::

    @hookimpl
    def register_strategies(register):
        register("capped", make_capped)
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "gru_plugin"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_strategies(register):
    """Call ``register(name, factory)`` once for each strategy this plugin adds."""
