"""GRU settings as the user writes them (``gru.*`` in Hydra), validated up front."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

REFERENCES = ("nll", "host")
NONFINITE = ("skip", "raise")
PROJECTIONS = ("all", "forget")


@dataclass(frozen=True)
class GRUSettings:
    """One run's GRU configuration.

    ``gamma`` weighs the fresh reference gradient in the EMA (1 = no EMA);
    ``reference`` is ``nll`` (mean token NLL on the retain batch, the paper's) or
    ``host`` (the method's own ``compute_retain_loss``); ``strategy`` names a
    registered rectification rule and ``strategy_args`` its options; ``method``
    names the host trainer to wrap; ``fast_path`` reuses the method's own retain
    backward as the reference where it is the same loss (false: always an extra
    reference pass, for comparison); ``nonfinite`` says what a NaN/inf in g or r
    does: ``skip`` (count it, leave that step unrectified, restart a poisoned EMA)
    or ``raise``; ``project`` is what gets rectified: ``all`` of g (the paper's
    GD, NPO+GD) or only the ``forget`` part, the method's own retain term being
    added after the projection, unchanged (the official code's ``+ce``/``+KL``).
    """

    method: str | None = None
    enabled: bool = True
    gamma: float = 0.8
    reference: str = "nll"
    strategy: str = "project"
    strategy_args: Mapping[str, Any] = field(default_factory=dict)
    fast_path: bool = True
    nonfinite: str = "skip"
    project: str = "all"

    def __post_init__(self):
        for name in ("enabled", "fast_path"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"gru.{name}={getattr(self, name)!r}: use true or false"
                )
        if not isinstance(self.gamma, (int, float)) or not 0.0 < self.gamma <= 1.0:
            raise ValueError(
                f"gru.gamma={self.gamma!r} must lie in (0, 1]: it weighs the fresh "
                "retain gradient in the EMA (0.8 is the paper's, 1 disables the EMA)"
            )
        if self.reference not in REFERENCES:
            raise ValueError(
                f"gru.reference={self.reference!r}: choose one of {list(REFERENCES)}"
            )
        if self.nonfinite not in NONFINITE:
            raise ValueError(
                f"gru.nonfinite={self.nonfinite!r}: choose one of {list(NONFINITE)}"
            )
        if self.project not in PROJECTIONS:
            raise ValueError(
                f"gru.project={self.project!r}: choose one of {list(PROJECTIONS)} "
                "(all: rectify the whole gradient; forget: only the method's "
                "forget part, its retain term added after)"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> GRUSettings:
        """Build from a plain mapping, rejecting unknown keys by name."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown GRU setting(s) {unknown}; the settings are {sorted(known)}"
            )
        values["strategy_args"] = dict(values.get("strategy_args") or {})
        return cls(**values)
