"""What GRU did at each optimizer step: the Trainer's log rows and the NaN policy."""

from __future__ import annotations

import logging
import math

from gru_plugin.rectify import RectifyStats

logger = logging.getLogger(__name__)

LOGGED_STATS = ("cos", "cos_after", "dot", "coef", "fired", "grad_norm", "ref_norm")
"""RectifyStats fields logged as ``gru/<field>``."""


class StepLog:
    """Every step's ``RectifyStats``, and those not yet in a Trainer log entry."""

    def __init__(self, nonfinite: str) -> None:
        self.nonfinite = nonfinite
        self.history: list[RectifyStats] = []
        self.nonfinite_steps = 0
        self._unlogged: list[RectifyStats] = []

    def record(self, stats: RectifyStats, step: int) -> bool:
        """Keep one step's statistics; True when r holds NaN/inf and must restart.

        A non-finite step is counted and left unrectified (``skip``), or stops the
        run (``raise``).
        """
        self.history.append(stats)
        self._unlogged.append(stats)
        if stats.finite:
            return False
        self.nonfinite_steps += 1
        bad_reference = not math.isfinite(stats.ref_norm)
        what = "the reference gradient r" if bad_reference else "the gradient g"
        message = (
            f"GRU: {what} holds NaN/inf at step {step} "
            f"({self.nonfinite_steps} such step(s) so far)"
        )
        if self.nonfinite == "raise":
            raise FloatingPointError(f"{message}; stopping (gru.nonfinite=raise)")
        if bad_reference:
            message += "; the reference EMA restarts from zero"
        logger.warning(
            "%s; this step is not rectified (gru.nonfinite=skip; set "
            "gru.nonfinite=raise to stop instead)",
            message,
        )
        return bad_reference

    def add_to(self, logs: dict[str, float]) -> None:
        """Put the mean of each statistic since the last training log into ``logs``.

        Only the Trainer's training entries (those with ``loss``) get them, so each
        carries the step it belongs to and ``gru/fired`` is the fraction of steps
        where GRU fired; ``gru/nonfinite`` counts the run's NaN/inf steps so far.
        """
        if "loss" not in logs or not self._unlogged:
            return
        steps, self._unlogged = self._unlogged, []
        for stat in LOGGED_STATS:
            values = [float(getattr(stats, stat)) for stats in steps]
            logs[f"gru/{stat}"] = sum(values) / len(values)
        logs["gru/nonfinite"] = self.nonfinite_steps
