"""The reference loss: on the fast path the method's own retain loss doubles as it.

While the method's step runs, each retain loss it computes is replaced by a leaf
of the same value: the method's backward stops at the leaf, and the gradient that
reaches it is the weight the method's loss gave the retain loss, whatever the
formula. GRU then back-propagates the retain graph once, for r and, with that
weight, for g, so no extra forward or backward runs. Off the fast path an extra
reference pass runs on the retain batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer

from gru_plugin.settings import GRUSettings

logger = logging.getLogger(__name__)


def reuses_method_retain(
    method: Trainer, settings: GRUSettings, has_retain_loss: bool
) -> bool:
    """Whether the fast path applies: the method's retain loss is the reference
    (its NLL, or any with ``gru.reference=host``). When not, the log says so."""
    fast = (
        settings.fast_path
        and has_retain_loss
        and (
            settings.reference == "host"
            or getattr(method, "retain_loss_type", None) == "NLL"
        )
    )
    if settings.enabled and not fast:
        logger.warning(
            "GRU: not reusing %s's retain backward (gru.reference=%s, "
            "gru.fast_path=%s); running an extra reference forward+backward on "
            "each retain batch",
            type(method).__name__,
            settings.reference,
            settings.fast_path,
        )
    return fast


def extra_reference_loss(
    method: Trainer, model: torch.nn.Module, inputs: dict[str, Any]
) -> torch.Tensor:
    """Off the fast path: the reference loss on the micro-batch's retain part."""
    if "retain" not in inputs:
        raise ValueError(
            "GRU needs a retain batch: the training data yields no 'retain' key"
        )
    keys = ("input_ids", "attention_mask", "labels")
    retain = method._prepare_inputs({key: inputs["retain"][key] for key in keys})
    with method.compute_loss_context_manager():
        if method.gru_settings.reference == "host":
            return method.compute_retain_loss(model=model, retain_inputs=retain)
        return model(**retain).loss


class RetainCut:
    """Cuts retain losses from the method's graph while ``run`` runs a step."""

    def __init__(self) -> None:
        self._captured: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def cut(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` itself outside ``run``; inside, a leaf standing in for it."""
        if self._captured is None:
            return loss
        leaf = loss.detach().requires_grad_()
        self._captured.append((loss, leaf))
        return leaf

    def run(
        self, step: Callable[[], torch.Tensor], method: str
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor | None]]]:
        """The step's loss, and each retain loss with its weight in the step's."""
        self._captured = []
        try:
            loss = step()
        finally:
            captured, self._captured = self._captured, None
        if not captured:
            raise RuntimeError(
                f"GRU: {method}.compute_loss did not call compute_retain_loss; "
                "set gru.fast_path=false and gru.project=all"
            )
        return loss, [(retain_loss, leaf.grad) for retain_loss, leaf in captured]
