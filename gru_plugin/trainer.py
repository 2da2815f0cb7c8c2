"""GRU as a mixin over any ``transformers.Trainer`` subclass (no host import).

Per micro-batch the wrapped trainer's own ``training_step`` builds the unlearning
gradient g exactly as the base method does; the reference backward of the same
retain batch adds its gradient into r (``gru_plugin.reference``). At the step
boundary g is rectified against r; the Trainer's (or engine's) clipping,
optimizer and scheduler then take over. Where gradients live and how they are
reached is the engine's business (``gru_plugin.engines``).

Fast path: when the reference loss is the one the method computes anyway (its
``compute_retain_loss`` is the mean NLL, or ``gru.reference=host``), the retain
loss the method returns is cut from its graph. The method's backward then stops
at the cut, the retain graph is traversed once by the reference backward, and
that gradient is added into g with the weight the method's loss gave it.
Otherwise an extra forward+backward of the reference loss provides it.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from gru_plugin.compat import micro_batches_in_step
from gru_plugin.engines import engine_class_for
from gru_plugin.plugins import make_strategy
from gru_plugin.rectify import RectifyStats
from gru_plugin.reference import ReferenceEMA, load_gru_state, save_gru_state
from gru_plugin.settings import GRUSettings
from gru_plugin.steplog import StepLog

logger = logging.getLogger(__name__)


def _retain_batch(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    if "retain" not in inputs:
        raise ValueError(
            "GRU needs a retain batch: the training data yields no 'retain' key"
        )
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
        self._gru_engine_class = engine_class_for(self)
        self._check_gru_setup()
        self.gru_fast_path = gru_settings.fast_path and self._host_retain_is_reference()
        if gru_settings.enabled and not self.gru_fast_path:
            logger.warning(
                "GRU: not reusing %s's retain backward (gru.reference=%s, "
                "gru.fast_path=%s); running an extra reference forward+backward on "
                "each retain batch",
                type(self).__name__,
                gru_settings.reference,
                gru_settings.fast_path,
            )
        self.gru_log = StepLog(gru_settings.nonfinite)
        self.gru_reference: ReferenceEMA | None = None
        self._gru_engine = None
        self._gru_resumed: dict[str, torch.Tensor] | None = None
        self._gru_step_open = False
        self._gru_captured: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def gru_history(self) -> list[RectifyStats]:
        return self.gru_log.history

    @property
    def gru_nonfinite(self) -> int:
        return self.gru_log.nonfinite_steps

    def _host_retain_is_reference(self) -> bool:
        """Whether the method's own retain loss is the configured reference."""
        if not hasattr(super(), "compute_retain_loss"):
            return False
        if self.gru_settings.reference == "host":
            return True
        return getattr(self, "retain_loss_type", None) == "NLL"

    def _check_gru_setup(self) -> None:
        """Fail before the first step for settings the run cannot honour."""
        name = type(self).__name__
        has_retain_loss = hasattr(super(), "compute_retain_loss")
        if self.gru_settings.reference == "host" and not has_retain_loss:
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

    def create_optimizer(self, *args, **kwargs):
        had_optimizer = self.optimizer is not None
        super().create_optimizer(*args, **kwargs)  # RMU returns None: read the attr
        if not had_optimizer:
            self.optimizer.register_step_pre_hook(self._gru_before_optimizer_step)
        return self.optimizer

    # -- checkpoints ---------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """Also honour ``args.resume_from_checkpoint``: the host passes no argument."""
        if resume_from_checkpoint is None:
            resume_from_checkpoint = self.args.resume_from_checkpoint
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial, *args, **kwargs):
        super()._save_checkpoint(model, trial, *args, **kwargs)
        if self.gru_reference is None:
            return  # GRU is disabled or has not stepped yet: nothing to keep
        folder = os.path.join(
            self._get_output_dir(trial=trial),
            f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}",
        )
        path = os.path.join(folder, self._gru_engine_class.state_file(self))
        save_gru_state(path, self.gru_reference, self.gru_nonfinite)

    def _load_optimizer_and_scheduler(self, resume_from_checkpoint):
        """Load GRU's state with the optimizer's: the one hook every engine passes."""
        super()._load_optimizer_and_scheduler(resume_from_checkpoint)
        if resume_from_checkpoint is None or not self.gru_settings.enabled:
            return
        name = self._gru_engine_class.state_file(self)
        found = load_gru_state(os.path.join(resume_from_checkpoint, name))
        if found is None:
            logger.warning(
                "GRU: %s has no %s; the reference EMA restarts from zero",
                resume_from_checkpoint,
                name,
            )
            return
        self._gru_resumed, self.gru_log.nonfinite_steps = found

    # -- one micro-batch ---------------------------------------------------------

    def compute_retain_loss(self, model, retain_inputs):
        """The method's retain loss, cut from its graph while the fast path runs."""
        loss = super().compute_retain_loss(model=model, retain_inputs=retain_inputs)
        if self._gru_captured is None:
            return loss
        cut = loss.detach().requires_grad_()
        self._gru_captured.append((loss, cut))
        return cut

    def training_step(self, model, inputs, *args, **kwargs):
        if not self.gru_settings.enabled:
            return super().training_step(model, inputs, *args, **kwargs)
        engine = self._gru_open_step()
        alpha = self.gru_settings.gamma / micro_batches_in_step(self)
        if self.gru_fast_path:
            self._gru_captured = []
            try:
                loss = super().training_step(model, inputs, *args, **kwargs)
            finally:
                captured, self._gru_captured = self._gru_captured, None
            if not captured:
                raise RuntimeError(
                    f"GRU: {type(self).__name__}.compute_loss did not call "
                    "compute_retain_loss; set gru.fast_path=false"
                )
            for index, (retain_loss, cut) in enumerate(captured):
                into = self.gru_reference.tensors if index == 0 else None
                engine.backward_reference(retain_loss, into, alpha, cut.grad)
        else:
            loss = super().training_step(model, inputs, *args, **kwargs)
            retain = self._prepare_inputs(_retain_batch(inputs))
            with self.compute_loss_context_manager():
                retain_loss = self._reference_loss(
                    engine.reference_model(model), retain
                )
            engine.backward_reference(
                retain_loss, self.gru_reference.tensors, alpha, None
            )
        if engine.at_boundary():
            self._rectify()
        engine.end_micro_batch()
        return loss

    def _gru_open_step(self):
        """The engine, built at the first step (its gradients exist only then); at a
        step's first micro-batch the EMA decays: r ← (1−γ)·r."""
        if self._gru_engine is None:
            self._gru_engine = self._gru_engine_class(self)
            names = {id(p): name for name, p in self.model.named_parameters()}
            self.gru_reference = ReferenceEMA(
                self._gru_engine.layout(),
                [names[id(p)] for p in self._gru_engine.params],
            )
            if self._gru_resumed is not None:
                self.gru_reference.load_state_dict(self._gru_resumed)
                self._gru_resumed = None
        if not self._gru_step_open:
            self.gru_reference.decay(self.gru_settings.gamma)
            self._gru_step_open = True
        return self._gru_engine

    def _reference_loss(self, model, retain: dict[str, torch.Tensor]):
        if self.gru_settings.reference == "host":
            return self.compute_retain_loss(model=model, retain_inputs=retain)
        return model(**retain).loss

    # -- one optimizer step -------------------------------------------------------

    def _gru_before_optimizer_step(self, optimizer, args, kwargs) -> None:
        """Safety net: never let the optimizer step on an unrectified gradient."""
        if self._gru_step_open:
            logger.warning(
                "GRU: the optimizer stepped at a boundary GRU did not foresee; "
                "rectified now, after any gradient clipping"
            )
            self._rectify()

    def _rectify(self) -> None:
        self._gru_step_open = False
        stats = self._gru_engine.rectify(self.gru_reference, self._gru_coefficient)
        if self.gru_log.record(stats, step=self.state.global_step + 1):
            self.gru_reference.restart()

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Add GRU's statistics to the Trainer's training log entries."""
        self.gru_log.add_to(logs)
        super().log(logs, *args, **kwargs)


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
