"""The two built-in strategies, registered through the same hook as third parties'."""

from __future__ import annotations

import math

from gru_plugin.hookspecs import hookimpl
from gru_plugin.rectify import Coefficient, project_coefficient


def make_project() -> Coefficient:
    """The paper's rule: g − (⟨g,r⟩/‖r‖²)·r when ⟨g,r⟩ < 0."""
    return project_coefficient


def make_cosclip(c: float = -0.5) -> Coefficient:
    """The official code's ``cos_clip`` option: cos(g, r) is clipped from below at c.

    Where cos ≥ c this is the projection; below c only part of the conflicting
    component is removed, so the result still conflicts (by design of the original).
    """
    if not -1.0 <= c <= 0.0:
        raise ValueError(
            f"gru.strategy_args.c={c}: the cos-clip bound must lie in [-1, 0]"
        )

    def coefficient(dot: float, grad_sq: float, ref_sq: float) -> float:
        if dot >= 0.0 or ref_sq <= 0.0 or grad_sq <= 0.0:
            return 0.0
        grad_norm, ref_norm = math.sqrt(grad_sq), math.sqrt(ref_sq)
        cos = max(dot / (grad_norm * ref_norm), c)
        return grad_norm * cos / ref_norm

    return coefficient


@hookimpl(tryfirst=True)
def register_strategies(register):
    register("project", make_project)
    register("cosclip", make_cosclip)
