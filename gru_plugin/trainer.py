"""GRU as a mixin over any ``transformers.Trainer`` subclass (no host import).

Per micro-batch the method's own ``training_step`` builds the unlearning gradient
g as in the base run, and a reference backward of the same retain batch adds into
r (``ReferenceEMA``); at the step boundary g is rectified against r, then the
Trainer (or engine) clips and steps. Where the gradients live is the engine's
business (``engines``). Fast path: when the reference loss is the method's own
retain loss, that loss is cut from the method's graph and back-propagated once,
for r and, weighted as the method weighs it, for g; otherwise an extra
forward+backward of the reference loss runs. With ``gru.project=forget`` the
method's retain losses are cut the same way on either path, and their part of g
is held back until the forget part has been rectified.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from gru_plugin.compat import micro_batches_in_step
from gru_plugin.engines import engine_class_for
from gru_plugin.fastpath import RetainCut, extra_reference_loss, reuses_method_retain
from gru_plugin.plugins import make_strategy
from gru_plugin.rectify import RectifyStats
from gru_plugin.reference import (
    FlatBuffers,
    ReferenceEMA,
    load_gru_state,
    parameter_names,
    save_gru_state,
)
from gru_plugin.settings import GRUSettings
from gru_plugin.steplog import StepLog

logger = logging.getLogger(__name__)


class GRUTrainerMixin:
    """Adds Gradient Rectified Unlearning to the trainer class it is mixed into."""

    def __init__(self, *args, gru_settings: GRUSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.gru_settings = gru_settings
        self._gru_coefficient = make_strategy(
            gru_settings.strategy, dict(gru_settings.strategy_args)
        )
        self._gru_engine_class = engine_class_for(self)
        has_retain_loss = hasattr(super(), "compute_retain_loss")
        self._check_gru_setup(has_retain_loss)
        self.gru_fast_path = reuses_method_retain(self, gru_settings, has_retain_loss)
        self._gru_holds_retain = gru_settings.project == "forget" and has_retain_loss
        self._gru_retain_part: FlatBuffers | None = None
        self.gru_log = StepLog(gru_settings.nonfinite)
        self.gru_reference: ReferenceEMA | None = None
        self._gru_engine = None
        self._gru_resumed: dict[str, torch.Tensor] | None = None
        self._gru_step_open = False
        self._gru_cut = RetainCut()

    @property
    def gru_history(self) -> list[RectifyStats]:
        return self.gru_log.history

    @property
    def gru_nonfinite(self) -> int:
        return self.gru_log.nonfinite_steps

    def _check_gru_setup(self, has_retain_loss: bool) -> None:
        """Fail before the first step for settings the run cannot honour."""
        name = type(self).__name__
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

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """Also honour ``args.resume_from_checkpoint``: the host passes no argument."""
        if resume_from_checkpoint is None:
            resume_from_checkpoint = self.args.resume_from_checkpoint
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial, *args, **kwargs):
        super()._save_checkpoint(model, trial, *args, **kwargs)
        if self.gru_reference is not None:  # None: GRU is off or has not stepped
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            name = self._gru_engine_class.state_file(self)
            path = os.path.join(self._get_output_dir(trial=trial), folder, name)
            save_gru_state(path, self.gru_reference, self.gru_nonfinite)

    def _load_optimizer_and_scheduler(self, resume_from_checkpoint):
        """Load GRU's state with the optimizer's: the one hook every engine passes."""
        super()._load_optimizer_and_scheduler(resume_from_checkpoint)
        if resume_from_checkpoint is not None and self.gru_settings.enabled:
            name = self._gru_engine_class.state_file(self)
            path = os.path.join(resume_from_checkpoint, name)
            self._gru_resumed, self.gru_log.nonfinite_steps = load_gru_state(path)

    def compute_retain_loss(self, model, retain_inputs):
        """The method's retain loss, cut from its graph while the fast path runs."""
        loss = super().compute_retain_loss(model=model, retain_inputs=retain_inputs)
        return self._gru_cut.cut(loss)

    def training_step(self, model, inputs, *args, **kwargs):
        if not self.gru_settings.enabled:
            return super().training_step(model, inputs, *args, **kwargs)
        engine = self._gru_open_step()
        engine.start_micro_batch()
        step = functools.partial(super().training_step, model, inputs, *args, **kwargs)
        if self.gru_fast_path or self._gru_holds_retain:
            loss, method_retain = self._gru_cut.run(step, type(self).__name__)
        else:
            loss, method_retain = step(), []
        alpha = self.gru_settings.gamma / micro_batches_in_step(self)
        reference, held = self.gru_reference.tensors, self._gru_retain_part
        if self.gru_fast_path:
            (retain_loss, weight), *method_retain = method_retain
            engine.backward_reference(retain_loss, reference, alpha, weight, held)
        for retain_loss, weight in method_retain:
            engine.backward_reference(retain_loss, None, alpha, weight, held)
        if not self.gru_fast_path:
            extra = extra_reference_loss(self, engine.reference_model(model), inputs)
            engine.backward_reference(extra, reference, alpha, None)
        if engine.at_boundary():
            self._rectify()
        engine.end_micro_batch()
        return loss

    def _gru_open_step(self):
        """The engine, built at the first step (its gradients exist only then); at a
        step's first micro-batch the EMA decays: r ← (1−γ)·r."""
        if self._gru_engine is None:
            engine = self._gru_engine = self._gru_engine_class(self)
            logger.info("GRU rectifies %s", engine)
            names = parameter_names(self.model, engine.params)
            self.gru_reference = ReferenceEMA(engine.layout(), names)
            if self._gru_holds_retain:
                self._gru_retain_part = FlatBuffers(engine.layout())
            if self._gru_resumed is not None:
                self.gru_reference.load_state_dict(self._gru_resumed)
                self._gru_resumed = None
        if not self._gru_step_open:
            self.gru_reference.decay(self.gru_settings.gamma)
            self._gru_step_open = True
        return self._gru_engine

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
        stats = self._gru_engine.rectify(
            self.gru_reference, self._gru_coefficient, self._gru_retain_part
        )
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
