"""Gradients in ``param.grad``: one process, or plain DDP (every rank holds all).

The reference gradient never gets a buffer of its own: while it is
back-propagated, a post-accumulate hook on each parameter folds that parameter's
piece into r and frees it, so the only extra memory is r itself.

DDP averages only the method's own backward, through its reducer. The reference
backward runs on the bare module (a second pass through DDP's reducer is not
synced and can confuse it), so r, and on the fast path the retain part added to g,
are local to each rank until ``rectify`` averages them once per step (so is the
method's retain term that ``gru.project=forget`` holds back from g).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from accelerate.utils import DistributedType

from gru_plugin.engines.base import TrainerStepped
from gru_plugin.rectify import Coefficient, RectifyStats, rectify_
from gru_plugin.reference import FlatBuffers, Layout, ReferenceEMA

STATE_FILE = "gru_state.safetensors"
"""GRU's state (r and the non-finite count) in each Trainer checkpoint folder."""


class LocalGradients(TrainerStepped):
    """``param.grad`` of the parameters the optimizer updates (RMU's selection).

    Nothing to prepare per micro-batch: DDP averages the method's accumulated g at
    the boundary.
    """

    @staticmethod
    def handles(trainer) -> bool:
        engine = trainer.accelerator.distributed_type
        return engine not in (DistributedType.DEEPSPEED, DistributedType.FSDP)

    @staticmethod
    def state_file(trainer) -> str:
        return STATE_FILE

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.model = trainer.model
        seen: set[int] = set()
        self.params: list[torch.nn.Parameter] = []
        for group in trainer.optimizer.param_groups:
            for param in group["params"]:
                if id(param) not in seen:
                    seen.add(id(param))
                    self.params.append(param)
        self._g_is_local = False

    def __str__(self) -> str:
        return "param.grad (one process, or DDP)"

    def layout(self) -> Layout:
        return [(p.shape, p.dtype, p.device) for p in self.params]

    def reference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The bare module, not DDP's wrapper (see the module docstring)."""
        return self.model

    def backward_reference(
        self,
        loss: torch.Tensor,
        into: Sequence[torch.Tensor] | None,
        alpha: float,
        weight_in_loss: torch.Tensor | None,
        retain_part: FlatBuffers | None = None,
    ) -> None:
        """Back-propagate a retain loss once, consuming its gradient per parameter.

        Each parameter's piece t is added as alpha·t to its tensor of ``into`` (r)
        and, when the method's loss holds it, as ``weight_in_loss``·t to g, or to
        ``retain_part`` until the projection is done; then it is freed. g stays
        in ``param.grad``.
        """
        params = [p for p in self.model.parameters() if p.requires_grad]
        unlearning = {id(p): p.grad for p in params}
        ema = dict(zip(map(id, self.params), into, strict=True)) if into else {}
        held = {}
        if retain_part is not None and weight_in_loss is not None:
            held = dict(zip(map(id, self.params), retain_part.tensors, strict=True))
        self._g_is_local |= weight_in_loss is not None and retain_part is None

        def consume(param: torch.Tensor) -> None:
            piece = param.grad
            target = ema.get(id(param))
            if target is not None:
                target.add_(piece, alpha=alpha)
            hold = held.get(id(param))
            grad = unlearning[id(param)]
            if hold is not None:
                hold.addcmul_(piece, weight_in_loss)
                if grad is None:  # the retain term comes: g will not be None
                    unlearning[id(param)] = torch.zeros_like(piece)
            elif weight_in_loss is not None:
                if grad is None:
                    unlearning[id(param)] = (piece * weight_in_loss).to(piece.dtype)
                else:
                    grad.addcmul_(piece, weight_in_loss)
            param.grad = None

        for param in params:
            param.grad = None
        handles = [p.register_post_accumulate_grad_hook(consume) for p in params]
        try:
            loss.backward()
        finally:
            for handle in handles:
                handle.remove()
            for param in params:
                param.grad = unlearning[id(param)]

    def rectify(
        self,
        reference: ReferenceEMA,
        coefficient: Coefficient,
        retain_part: FlatBuffers | None = None,
    ) -> RectifyStats:
        """g ← rectified g (+ the held retain part, which is then cleared)."""
        self._average_across_ranks(reference, retain_part)
        grads = [p.grad for p in self.params]
        stats = rectify_(grads, reference.tensors, coefficient)
        if retain_part is not None:
            retain_part.drain_into(grads)
        if stats.fired:
            for param, grad in zip(self.params, grads, strict=True):
                if param.grad is None:
                    param.grad = grad
        return stats

    def _average_across_ranks(
        self, reference: ReferenceEMA, retain_part: FlatBuffers | None
    ) -> None:
        """Make r (and, where the fast path added to it, g; and a held retain
        part) the mean over ranks.

        The part of g that DDP reduced is already equal on every rank, so
        averaging all of g again is exact; r is equal on every rank before the
        step, so averaging it averages just the fresh part. Afterwards every rank
        holds the same g and r and computes the same coefficient.
        """
        g_is_local, self._g_is_local = self._g_is_local, False
        world = self.trainer.accelerator.num_processes
        if world == 1:
            return
        import torch.distributed as dist

        held = retain_part.buffers if retain_part is not None else []
        for buffer in [*reference.buffers, *held]:
            dist.all_reduce(buffer)
            buffer.div_(world)
        if not g_is_local:
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        for dtype in {g.dtype for g in grads}:
            group = [g for g in grads if g.dtype == dtype]
            flat = torch._utils._flatten_dense_tensors(group)
            dist.all_reduce(flat)
            flat.div_(world)
            torch._foreach_copy_(
                group, torch._utils._unflatten_dense_tensors(flat, group)
            )
