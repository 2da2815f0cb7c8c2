"""FSDP2 (torch's ``fully_shard``): this rank's shard of every DTensor gradient.

Under FSDP2 each parameter is a DTensor sharded on its first dimension, and after a
synced backward ``param.grad`` is a DTensor whose local tensor is this rank's shard
of the gradient, reduce-scattered (the mean over ranks) and added to what the shard
held. GRU works on those local tensors in place: r is sharded like them, nothing is
gathered, and the projection's sums are added over ranks once per step.

GRU needs the shards to hold the global sum so far after every backward, but on the
micro-batches before a boundary accelerate's ``no_sync`` turns FSDP2's gradient
sync off, and FSDP2 then keeps an unsharded local sum in which the reference
backward would mix with g. So every micro-batch turns the sync back on
(``start_micro_batch``): each backward is reduced, as under ZeRO (more
communication when ``gradient_accumulation_steps`` > 1, the same sum).

The reference backward runs on the model itself with every gradient set aside:
FSDP2 then hands the reference gradient over as fresh shards, which go into r
(and, where the method's loss holds them, into g); g's own shards are put back.
The Trainer then clips the DTensor gradients and steps, as without GRU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from gru_plugin.engines.base import TrainerStepped
from gru_plugin.engines.sharded import per_rank_state_file, sum_over_ranks
from gru_plugin.rectify import Coefficient, RectifyStats, rectify_
from gru_plugin.reference import FlatBuffers, Layout, ReferenceEMA


class FullyShardedGradients(TrainerStepped):
    """Local shards of the DTensor gradients of the parameters the optimizer updates."""

    @staticmethod
    def handles(trainer) -> bool:
        return bool(getattr(trainer.accelerator, "is_fsdp2", False))

    state_file = staticmethod(per_rank_state_file)

    def __init__(self, trainer) -> None:
        from torch.distributed.tensor import DTensor

        super().__init__(trainer)
        self.model = trainer.model
        self.device = trainer.args.device
        params = {id(p): p for g in trainer.optimizer.param_groups for p in g["params"]}
        self.params: list[torch.nn.Parameter] = list(params.values())
        if not all(isinstance(p, DTensor) for p in self.params):
            raise ValueError(
                "GRU under FSDP2 expects every parameter the optimizer updates to be "
                "sharded by fully_shard (a DTensor); this model has plain ones. "
                "Let accelerate shard the whole model (fsdp_version: 2), or set "
                "gru.enabled=false"
            )

    def __str__(self) -> str:
        return "each rank's shard of FSDP2's DTensor gradients"

    def layout(self) -> Layout:
        """Shape, dtype and device of this rank's shard of each parameter."""
        shards = [p.to_local() for p in self.params]
        return [(shard.shape, shard.dtype, shard.device) for shard in shards]

    def start_micro_batch(self) -> None:
        """Reduce this micro-batch's backwards too (see the module docstring)."""
        self.model.set_requires_gradient_sync(True)

    def backward_reference(
        self,
        loss: torch.Tensor,
        into: Sequence[torch.Tensor] | None,
        alpha: float,
        weight_in_loss: torch.Tensor | None,
        retain_part: FlatBuffers | None = None,
    ) -> None:
        """Back-propagate a retain loss once, with g's shards set aside.

        Each parameter's fresh shard t is added as alpha·t to its tensor of
        ``into`` (r) and, when the method's loss holds it, as ``weight_in_loss``·t
        to g, or to ``retain_part`` until the projection is done. No gradient-sized
        copy: g's DTensors are set aside and put back.
        """
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        unlearning = {id(p): p.grad for p in trainable}
        ema = dict(zip(map(id, self.params), into, strict=True)) if into else {}
        held = {}
        if retain_part is not None and weight_in_loss is not None:
            held = dict(zip(map(id, self.params), retain_part.tensors, strict=True))
        for param in trainable:
            param.grad = None
        loss.backward()
        for param in trainable:
            fresh, grad = param.grad, unlearning[id(param)]
            param.grad = grad
            if fresh is None:  # the retain loss did not reach this parameter
                continue
            piece = fresh.to_local()
            target = ema.get(id(param))
            if target is not None:
                target.add_(piece, alpha=alpha)
            hold = held.get(id(param))
            if hold is not None:
                hold.addcmul_(piece, weight_in_loss)
                if grad is None:  # the retain term comes: g will not be None
                    param.grad = torch.zeros_like(fresh)
            elif weight_in_loss is not None:
                if grad is None:
                    param.grad = fresh
                    piece.mul_(weight_in_loss)
                else:
                    grad.to_local().addcmul_(piece, weight_in_loss)

    def rectify(
        self,
        reference: ReferenceEMA,
        coefficient: Coefficient,
        retain_part: FlatBuffers | None = None,
    ) -> RectifyStats:
        """g ← rectified g (+ the held retain part, which is then cleared)."""
        pieces = [None if p.grad is None else p.grad.to_local() for p in self.params]
        add_over_ranks = functools.partial(sum_over_ranks, device=self.device)
        stats = rectify_(pieces, reference.tensors, coefficient, add_over_ranks)
        if retain_part is not None:
            retain_part.drain_into(pieces)
        for param, piece in zip(self.params, pieces, strict=True):
            if param.grad is None and piece is not None:  # rectify_ made it
                param.grad = sharded_like(param, piece)
        return stats


def sharded_like(param: torch.Tensor, shard: torch.Tensor) -> torch.Tensor:
    """A DTensor gradient for ``param`` whose local shard is ``shard``."""
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        shard,
        param.device_mesh,
        param.placements,
        run_check=False,
        shape=param.shape,
        stride=param.stride(),
    )
