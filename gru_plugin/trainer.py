"""GRU as a mixin over any ``transformers.Trainer`` subclass (no host import).

Per micro-batch the wrapped trainer's own ``training_step`` builds the unlearning
gradient g in ``param.grad`` exactly as the base method does. The reference
gradient of the same retain batch never gets a buffer of its own: while it is
back-propagated, a post-accumulate hook on each parameter folds that parameter's
piece into the EMA r and frees it, so the only extra memory is r itself.

Fast path: when the reference loss is the one the method computes anyway (its
``compute_retain_loss`` is the mean NLL, or ``gru.reference=host``), the retain
loss the method returns is cut from its graph. The method's backward then stops
at the cut, the retain graph is traversed once by the reference backward, and
that gradient is added into g with the weight the method's loss gave it. Otherwise
an extra forward+backward of the reference loss on the retain batch provides it.

At the Trainer's step boundary g is rectified against r; the Trainer's clipping,
optimizer and scheduler then take over.

Under DeepSpeed ZeRO the engine owns the gradient: each rank holds its partition
(``gru_plugin.zero``). Both losses are back-propagated through the engine, the
reference's share is taken out of the partition by difference, r is kept sharded
like the partition, and the sums of the projection are added over ranks once per
step, before the engine clips and steps.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from typing import Any

import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from gru_plugin.plugins import make_strategy
from gru_plugin.rectify import RectifyStats, rectify_
from gru_plugin.settings import GRUSettings
from gru_plugin.zero import ZeroGradients

logger = logging.getLogger(__name__)

UNSUPPORTED_ENGINES = (DistributedType.FSDP,)
"""Engines whose gradients GRU cannot reach yet; it refuses them before training."""

LOGGED_STATS = ("cos", "cos_after", "dot", "coef", "fired", "grad_norm", "ref_norm")
"""RectifyStats fields logged as ``gru/<field>``."""

STATE_FILE = "gru_state.safetensors"
"""GRU's state in each Trainer checkpoint folder: the reference EMA by parameter
(``ema.<name>``) and the count of non-finite steps. Under DeepSpeed each rank keeps
its shard of the EMA, in ``gru_state.rank<N>.safetensors``."""
NONFINITE_KEY = "nonfinite_steps"


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
        self._gru_step_open = False
        self._gru_captured: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._gru_resumed_state: dict[str, torch.Tensor] | None = None
        self.gru_history: list[RectifyStats] = []
        self._gru_unlogged: list[RectifyStats] = []
        self.gru_nonfinite = 0
        self._gru_zero: ZeroGradients | None = None

    def _host_has_retain_loss(self) -> bool:
        return hasattr(super(), "compute_retain_loss")

    def _host_retain_is_reference(self) -> bool:
        """Whether the method's own retain loss is the configured reference."""
        if not self._host_has_retain_loss():
            return False
        if self.gru_settings.reference == "host":
            return True
        return getattr(self, "retain_loss_type", None) == "NLL"

    def _check_gru_setup(self) -> None:
        """Fail before the first step for settings the run cannot honour."""
        name = type(self).__name__
        if self.gru_settings.reference == "host" and not self._host_has_retain_loss():
            raise ValueError(
                f"gru.reference=host: {name} has no compute_retain_loss of its own; "
                "use gru.reference=nll"
            )
        engine = self.accelerator.distributed_type
        if engine in UNSUPPORTED_ENGINES:
            raise ValueError(
                f"GRU does not support {engine.value} yet: it cannot see the "
                "gradients there. Run on one process, with plain DDP (accelerate "
                "launch --multi_gpu, or torchrun) or with DeepSpeed ZeRO-1/2/3, or "
                "set gru.enabled=false"
            )
        dataset = self.train_dataset
        if dataset is not None and hasattr(dataset, "retain") and not dataset.retain:
            raise ValueError(
                f"GRU needs a retain set, but {name}'s training data has none: "
                "configure data.retain (e.g. retain_split=retain90)"
            )

    # -- parameters and the optimizer ---------------------------------------------

    def create_optimizer(self):
        had_optimizer = self.optimizer is not None
        super().create_optimizer()  # RMU's override returns None: read the attribute
        if not had_optimizer:
            self.optimizer.register_step_pre_hook(self._gru_before_optimizer_step)
        return self.optimizer

    @functools.cached_property
    def _gru_trainable(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates (RMU's selection, not requires_grad).

        Under DeepSpeed: those whose gradient has a piece on this rank.
        """
        if self._gru_zero is not None:
            return self._gru_zero.params
        seen: set[int] = set()
        params = []
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if id(param) not in seen:
                    seen.add(id(param))
                    params.append(param)
        return params

    @functools.cached_property
    def _gru_layout(self) -> list[tuple[torch.Size, torch.dtype, torch.device]]:
        """Shape, dtype and device of this rank's gradient of each trainable param."""
        if self._gru_zero is not None:
            return self._gru_zero.layout()
        return [(p.shape, p.dtype, p.device) for p in self._gru_trainable]

    @functools.cached_property
    def _gru_ema_buffers(self) -> list[torch.Tensor]:
        """The reference EMA r, one flat buffer per dtype and device; r₀ = 0.

        Flat, so that averaging it across ranks is one in-place collective.
        """
        sizes: dict[tuple[torch.dtype, torch.device], int] = {}
        for shape, dtype, device in self._gru_layout:
            sizes[dtype, device] = sizes.get((dtype, device), 0) + shape.numel()
        return [torch.zeros(n, dtype=d, device=dev) for (d, dev), n in sizes.items()]

    @functools.cached_property
    def _gru_ema(self) -> list[torch.Tensor]:
        """r as one tensor per trainable parameter, views into ``_gru_ema_buffers``."""
        buffers = {(b.dtype, b.device): b for b in self._gru_ema_buffers}
        offsets = dict.fromkeys(buffers, 0)
        ema = []
        for shape, dtype, device in self._gru_layout:
            key = (dtype, device)
            start, offsets[key] = offsets[key], offsets[key] + shape.numel()
            ema.append(buffers[key][start : offsets[key]].view(shape))
        if self._gru_resumed_state is not None:
            names = self._gru_trainable_names
            if set(self._gru_resumed_state) != set(names):
                raise ValueError(
                    f"the checkpoint's {STATE_FILE} holds another set of parameters "
                    "than this run trains; resume with the same trainer settings"
                )
            for name, tensor in zip(names, ema, strict=True):
                tensor.copy_(self._gru_resumed_state[name])
            self._gru_resumed_state = None
        return ema

    @functools.cached_property
    def _gru_ema_by_param(self) -> dict[int, torch.Tensor]:
        pairs = zip(self._gru_trainable, self._gru_ema, strict=True)
        return {id(param): ema for param, ema in pairs}

    @functools.cached_property
    def _gru_trainable_names(self) -> list[str]:
        names = {id(p): name for name, p in self.model.named_parameters()}
        return [f"ema.{names[id(p)]}" for p in self._gru_trainable]

    # -- checkpoints ---------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """Also honour ``args.resume_from_checkpoint``: the host passes no argument."""
        if resume_from_checkpoint is None:
            resume_from_checkpoint = self.args.resume_from_checkpoint
        return super().train(resume_from_checkpoint, *args, **kwargs)

    @property
    def _gru_state_file(self) -> str:
        if not self.is_deepspeed_enabled:
            return STATE_FILE
        return f"gru_state.rank{self.args.process_index}.safetensors"

    def _save_checkpoint(self, model, trial, metrics=None):
        super()._save_checkpoint(model, trial, metrics=metrics)
        if "_gru_ema" not in self.__dict__:
            return  # GRU is disabled or has not stepped yet: nothing to keep
        folder = os.path.join(
            self._get_output_dir(trial=trial),
            f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}",
        )
        state = dict(zip(self._gru_trainable_names, self._gru_ema, strict=True))
        state[NONFINITE_KEY] = torch.tensor(self.gru_nonfinite)
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            os.path.join(folder, self._gru_state_file),
        )

    def _load_optimizer_and_scheduler(self, resume_from_checkpoint):
        """Load GRU's state with the optimizer's: the one hook every engine passes."""
        super()._load_optimizer_and_scheduler(resume_from_checkpoint)
        if resume_from_checkpoint is None or not self.gru_settings.enabled:
            return
        path = os.path.join(resume_from_checkpoint, self._gru_state_file)
        if os.path.exists(path):
            state = load_file(path)
            self.gru_nonfinite = int(state.pop(NONFINITE_KEY, torch.tensor(0)))
            self._gru_resumed_state = state
        else:
            logger.warning(
                "GRU: %s has no %s; the reference EMA restarts from zero",
                resume_from_checkpoint,
                self._gru_state_file,
            )

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
        zero = self._gru_zero_gradients()
        self._open_step()
        if zero is None:
            backward, reducing = self._backward_reference, contextlib.nullcontext()
        else:
            backward = self._zero_backward_reference
            reducing = zero.reducing_every_backward()
        with reducing:
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
                    backward(retain_loss, index == 0, cut.grad)
            else:
                loss = super().training_step(model, inputs, *args, **kwargs)
                retain = self._prepare_inputs(_retain_batch(inputs))
                with self.compute_loss_context_manager():
                    # Plain or DDP: the bare module, since a second pass through
                    # DDP's reducer is not synced (and can confuse it);
                    # _average_across_ranks syncs r. DeepSpeed: its engine.
                    retain_loss = self._reference_loss(
                        self.model if zero is None else model, retain
                    )
                backward(retain_loss, True, None)
        if zero is None:
            if self._at_step_boundary():
                self._rectify()
        else:
            if zero.at_boundary():
                self._rectify()
            zero.engine.step()  # held back from accelerate's backward, see below
        return loss

    def _gru_zero_gradients(self) -> ZeroGradients | None:
        """Under DeepSpeed: the engine's gradient partitions, and its step held back.

        accelerate's backward runs ``engine.backward`` and then ``engine.step``,
        which clips and steps at the boundary; GRU must act between the two, so the
        wrapper's backward is bound to ``engine.backward`` alone and
        ``training_step`` calls ``engine.step`` itself.
        """
        if not self.is_deepspeed_enabled:
            return None
        if self._gru_zero is None:
            wrapper = self.accelerator.deepspeed_engine_wrapped
            wrapper.backward = wrapper.engine.backward
            self._gru_zero = ZeroGradients(wrapper.engine)
        return self._gru_zero

    def _reference_loss(self, model, retain: dict[str, torch.Tensor]):
        if self.gru_settings.reference == "host":
            return self.compute_retain_loss(model=model, retain_inputs=retain)
        return model(**retain).loss

    def _open_step(self) -> None:
        """At a step's first micro-batch, decay the EMA: r ← (1−γ)·r."""
        if not self._gru_step_open:
            torch._foreach_mul_(self._gru_ema, 1.0 - self.gru_settings.gamma)
            self._gru_step_open = True

    def _backward_reference(
        self,
        retain_loss: torch.Tensor,
        into_ema: bool,
        weight_in_loss: torch.Tensor | None,
    ) -> None:
        """Back-propagate a retain loss once, consuming its gradient per parameter.

        Each parameter's piece t is added to the EMA as γ·t/GAS (the step's mean,
        as the Trainer accumulates) and, on the fast path, to g as
        ``weight_in_loss``·t; then it is freed. g stays in ``param.grad``.
        """
        params = [p for p in self.model.parameters() if p.requires_grad]
        unlearning = {id(p): p.grad for p in params}
        ema = self._gru_ema_by_param if into_ema else {}
        ema_weight = self.gru_settings.gamma / self.args.gradient_accumulation_steps

        def consume(param: torch.Tensor) -> None:
            piece = param.grad
            target = ema.get(id(param))
            if target is not None:
                target.add_(piece, alpha=ema_weight)
            if weight_in_loss is not None:
                grad = unlearning[id(param)]
                if grad is None:
                    unlearning[id(param)] = (piece * weight_in_loss).to(piece.dtype)
                else:
                    grad.addcmul_(piece, weight_in_loss)
            param.grad = None

        for param in params:
            param.grad = None
        handles = [p.register_post_accumulate_grad_hook(consume) for p in params]
        try:
            retain_loss.backward()
        finally:
            for handle in handles:
                handle.remove()
            for param in params:
                param.grad = unlearning[id(param)]

    def _zero_backward_reference(
        self,
        retain_loss: torch.Tensor,
        into_ema: bool,
        weight_in_loss: torch.Tensor | None,
    ) -> None:
        """``_backward_reference`` through a ZeRO engine, on its local partition.

        The engine adds the reference gradient t (averaged over ranks) to the
        partition that holds g; t is the difference, and g is put back (plus
        ``weight_in_loss``·t on the fast path). Extra memory: one partition copy.
        """
        zero = self._gru_zero
        unlearning = [piece.clone() for piece in zero.read()]
        zero.engine.backward(retain_loss, scale_wrt_gas=False)
        pieces = zero.read()
        torch._foreach_sub_(pieces, unlearning)
        if into_ema:
            gas = self.args.gradient_accumulation_steps
            torch._foreach_add_(
                self._gru_ema, pieces, alpha=self.gru_settings.gamma / gas
            )
        if weight_in_loss is None:
            zero.write(unlearning)
        else:
            torch._foreach_mul_(pieces, weight_in_loss)
            torch._foreach_add_(pieces, unlearning)
            zero.write(pieces)

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
        if self._gru_step_open:
            logger.warning(
                "GRU: the optimizer stepped at a boundary GRU did not foresee; "
                "rectified now, after any gradient clipping"
            )
            self._rectify()

    def _average_across_ranks(self) -> None:
        """Make r (and, on the fast path, g) the mean over data-parallel ranks.

        DDP averages only the method's own backward. The reference backward is
        local to each rank, and so is the retain gradient the fast path adds to
        g; the rest of g is already equal on every rank, so averaging all of g
        again is exact. r is equal on every rank before the step, so averaging it
        averages just the fresh part. Afterwards every rank holds the same g and
        r and computes the same coefficient without another collective.
        """
        world = self.accelerator.num_processes
        if world == 1:
            return
        import torch.distributed as dist

        for buffer in self._gru_ema_buffers:
            dist.all_reduce(buffer)
            buffer.div_(world)
        if self.gru_fast_path:
            grads = [p.grad for p in self._gru_trainable if p.grad is not None]
            for dtype in {g.dtype for g in grads}:
                group = [g for g in grads if g.dtype == dtype]
                flat = torch._utils._flatten_dense_tensors(group)
                dist.all_reduce(flat)
                flat.div_(world)
                unflat = torch._utils._unflatten_dense_tensors(flat, group)
                torch._foreach_copy_(group, unflat)

    def _rectify(self) -> None:
        self._gru_step_open = False
        if self._gru_zero is not None:
            pieces = self._gru_zero.read()
            sum_over_ranks = functools.partial(_sum_over_ranks, device=self.args.device)
            stats = rectify_(
                pieces, self._gru_ema, self._gru_coefficient, sum_over_ranks
            )
            if stats.fired:
                self._gru_zero.write(pieces)
            self._gru_record(stats)
            return
        self._average_across_ranks()
        params = self._gru_trainable
        grads = [p.grad for p in params]
        stats = rectify_(grads, self._gru_ema, self._gru_coefficient)
        if stats.fired:
            for param, grad in zip(params, grads, strict=True):
                if param.grad is None:
                    param.grad = grad
        self._gru_record(stats)

    def _gru_record(self, stats: RectifyStats) -> None:
        if not stats.finite:
            self._gru_on_nonfinite(stats)
        self.gru_history.append(stats)
        self._gru_unlogged.append(stats)

    def _gru_on_nonfinite(self, stats: RectifyStats) -> None:
        """Count a NaN/inf step; restart a poisoned EMA, or stop if asked to."""
        self.gru_nonfinite += 1
        bad_reference = not math.isfinite(stats.ref_norm)
        what = "the reference gradient r" if bad_reference else "the gradient g"
        message = (
            f"GRU: {what} holds NaN/inf at step {self.state.global_step + 1} "
            f"({self.gru_nonfinite} such step(s) so far)"
        )
        if self.gru_settings.nonfinite == "raise":
            raise FloatingPointError(f"{message}; stopping (gru.nonfinite=raise)")
        if bad_reference:
            torch._foreach_zero_(self._gru_ema_buffers)
            message += "; the reference EMA restarts from zero"
        logger.warning(
            "%s; this step is not rectified (gru.nonfinite=skip; set "
            "gru.nonfinite=raise to stop instead)",
            message,
        )

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Add GRU's statistics to the Trainer's training log entries.

        Each training log (the one with ``loss``) gets the mean of every statistic
        over the optimizer steps since the previous one, so it carries the step it
        belongs to and ``gru/fired`` is the fraction of steps where GRU fired;
        ``gru/nonfinite`` counts the run's NaN/inf steps so far.
        """
        if "loss" in logs and self._gru_unlogged:
            steps, self._gru_unlogged = self._gru_unlogged, []
            for field in LOGGED_STATS:
                values = [float(getattr(stats, field)) for stats in steps]
                logs[f"gru/{field}"] = sum(values) / len(values)
            logs["gru/nonfinite"] = self.gru_nonfinite
        super().log(logs, *args, **kwargs)


def _sum_over_ranks(sums: tuple[float, ...], device: torch.device) -> tuple[float, ...]:
    """Add each rank's partial sums: one collective of a few scalars."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return sums
    totals = torch.tensor(sums, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return tuple(totals.tolist())


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
