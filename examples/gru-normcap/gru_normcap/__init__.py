"""An example rectification strategy, shipped as its own package.

``normcap`` is GRU's projection with a cap: the component it subtracts,
``|coef|·‖r‖``, is at most ``cap·‖g‖``, so one step can never be rewritten by more
than a fraction of its own length. Use it with

    python src/train.py ... +gru=default gru.strategy=normcap +gru.strategy_args.cap=0.5
"""

from __future__ import annotations

import math

from gru_plugin.hookspecs import hookimpl
from gru_plugin.rectify import Coefficient, project_coefficient


def make_normcap(cap: float = 0.5) -> Coefficient:
    """The projection coefficient, capped at ``cap·‖g‖/‖r‖`` in magnitude."""
    if not cap > 0.0:
        raise ValueError(f"gru.strategy_args.cap={cap}: the cap must be positive")

    def coefficient(dot: float, grad_sq: float, ref_sq: float) -> float:
        coef = project_coefficient(dot, grad_sq, ref_sq)
        if coef == 0.0:
            return 0.0
        return max(coef, -cap * math.sqrt(grad_sq) / math.sqrt(ref_sq))

    return coefficient


@hookimpl
def register_strategies(register):
    register("normcap", make_normcap)
