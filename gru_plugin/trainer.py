"""GRU as a mixin over any ``transformers.Trainer`` subclass (no host import).

Data flow per micro-batch: the wrapped trainer's own ``training_step`` builds the
unlearning gradient g in ``param.grad`` exactly as the base method does; then the
reference loss on the same retain batch is back-propagated into a separate stream
(``param.grad`` is swapped, not copied). At the Trainer's step boundary the
reference stream enters the EMA r, g is rectified against r, and the Trainer's
own clipping, optimizer and scheduler take over.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from gru_plugin.plugins import make_strategy
from gru_plugin.rectify import RectifyStats, ema_update_, rectify_
from gru_plugin.settings import GRUSettings

logger = logging.getLogger(__name__)


def _retain_batch(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    retain = inputs["retain"]
    return {key: retain[key] for key in ("input_ids", "attention_mask", "labels")}


class GRUTrainerMixin:
    """Adds Gradient Rectified Unlearning to the trainer class it is mixed into."""

    def __init__(self, *args, gru_settings: GRUSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.gru_settings = gru_settings
        self._gru_coefficient = make_strategy(
            gru_settings.strategy, dict(gru_settings.strategy_args)
        )
        self._check_gru_setup()
        self._gru_ema: list[torch.Tensor] | None = None
        self._gru_reference_grads: list[torch.Tensor | None] | None = None
        self._gru_pending = False
        self.gru_history: list[RectifyStats] = []

    def _check_gru_setup(self) -> None:
        """Fail before the first step for settings the run cannot honour."""
        name = type(self).__name__
        if self.gru_settings.reference == "host" and not hasattr(
            self, "compute_retain_loss"
        ):
            raise ValueError(
                f"gru.reference=host: {name} has no compute_retain_loss of its own; "
                "use gru.reference=nll"
            )
        dataset = self.train_dataset
        if dataset is not None and hasattr(dataset, "retain") and not dataset.retain:
            raise ValueError(
                f"GRU needs a retain set, but {name}'s training data has none: "
                "configure data.retain (e.g. retain_split=retain90)"
            )

    # -- the optimizer -----------------------------------------------------------

    def create_optimizer(self):
        super().create_optimizer()  # RMU's override returns None: read the attribute
        self.optimizer.register_step_pre_hook(self._gru_before_optimizer_step)
        return self.optimizer

    @functools.cached_property
    def _gru_trainable(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates (RMU's selection, not requires_grad)."""
        seen: set[int] = set()
        params = []
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if id(param) not in seen:
                    seen.add(id(param))
                    params.append(param)
        return params

    # -- one micro-batch ---------------------------------------------------------

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        if not self.gru_settings.enabled:
            return loss
        self._accumulate_reference(model, inputs)
        if self._at_step_boundary():
            self._rectify()
        return loss

    def _reference_loss(self, model, retain: dict[str, torch.Tensor]):
        if self.gru_settings.reference == "host":
            return self.compute_retain_loss(model=model, retain_inputs=retain)
        return model(**retain).loss

    def _accumulate_reference(self, model, inputs) -> None:
        """Back-propagate the reference loss into its own gradient stream."""
        if "retain" not in inputs:
            raise ValueError(
                "GRU needs a retain batch: the training data yields no 'retain' key"
            )
        retain = self._prepare_inputs(_retain_batch(inputs))
        params = [p for p in self.model.parameters() if p.requires_grad]
        unlearning_grads = [p.grad for p in params]
        previous = self._gru_reference_grads or [None] * len(params)
        for param, grad in zip(params, previous, strict=True):
            param.grad = grad
        with self.compute_loss_context_manager():
            loss = self._reference_loss(model, retain)
        self.accelerator.backward(loss)
        self._gru_reference_grads = [p.grad for p in params]
        for param, grad in zip(params, unlearning_grads, strict=True):
            param.grad = grad
        self._gru_pending = True

    def _at_step_boundary(self) -> bool:
        """The Trainer's own boundary, read from accelerate's gradient state.

        transformers 4.45 also steps after the last micro-batch of an epoch that is
        shorter than the accumulation window, setting ``sync_gradients`` only after
        ``training_step`` returns; that case is read from the dataloader state.
        """
        if self.accelerator.sync_gradients:
            return True
        state = self.accelerator.gradient_state
        loader = state.active_dataloader
        return bool(
            state.end_of_dataloader
            and loader is not None
            and len(loader) <= self.args.gradient_accumulation_steps
        )

    # -- one optimizer step -------------------------------------------------------

    def _gru_before_optimizer_step(self, optimizer, args, kwargs) -> None:
        """Safety net: never let the optimizer step on an unrectified gradient."""
        if self._gru_pending:
            logger.warning(
                "GRU: the optimizer stepped at a boundary GRU did not foresee; "
                "rectified now, after any gradient clipping"
            )
            self._rectify()

    def _reference_for_trainable(self) -> list[torch.Tensor | None]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        by_param = {
            id(p): g for p, g in zip(params, self._gru_reference_grads, strict=True)
        }
        return [by_param.get(id(p)) for p in self._gru_trainable]

    def _rectify(self) -> None:
        params = self._gru_trainable
        if self._gru_ema is None:
            self._gru_ema = [torch.zeros_like(p) for p in params]
        fresh = self._reference_for_trainable()
        ema_update_(self._gru_ema, fresh, self.gru_settings.gamma)
        self._gru_reference_grads = None
        self._gru_pending = False

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        stats = rectify_(grads, self._gru_ema, self._gru_coefficient)
        if stats.fired:
            for param, grad in zip(params, grads, strict=True):
                if param.grad is None:
                    param.grad = grad
        self.gru_history.append(stats)
        self.log(
            {
                "gru/cos": stats.cos,
                "gru/cos_after": stats.cos_after,
                "gru/dot": stats.dot,
                "gru/coef": stats.coef,
                "gru/fired": float(stats.fired),
                "gru/grad_norm": stats.grad_norm,
                "gru/ref_norm": stats.ref_norm,
            }
        )


@functools.cache
def gru_trainer_class(base: type) -> type:
    """The GRU variant of ``base`` (cached, so a base maps to one class)."""
    if issubclass(base, GRUTrainerMixin):
        return base
    return type(
        f"{base.__name__}_GRU",
        (GRUTrainerMixin, base),
        {"__module__": __name__, "__doc__": f"{base.__name__} with GRU."},
    )
