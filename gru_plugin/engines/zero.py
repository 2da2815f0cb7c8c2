"""DeepSpeed ZeRO-1/2/3: this rank's piece of the gradient the engine accumulates.

Under DeepSpeed ``param.grad`` is None: the engine reduces every backward into
gradient partitions of its own, and each rank holds only its partition. GRU reads
and writes those partitions in place, so r is sharded the same way and no full
gradient is ever gathered; the sums of the projection are added over ranks once
per step. ZeRO-3 offers a public local API for this; ZeRO-1/2 keep the partition
of each parameter as a fragment that its ``_hp_mapping`` points to (the same
fragment ``safe_set_full_grad`` writes).

GRU needs the partition to hold the global sum so far after every backward.
ZeRO-1 (and ZeRO-2 from DeepSpeed 0.16) reduce only at the accumulation boundary,
keeping earlier micro-steps in ``param.grad``, and a reduction there may copy into
the partition rather than add. So under ZeRO-1/2 each backward is reduced as at a
boundary into a zeroed partition, and what the partition held is added back: the
same sum whichever way a DeepSpeed version reduces (one transient partition copy).

With the optimizer offloaded (``offload_optimizer.device: cpu``, DeepSpeed 0.15's
path), the partition is DeepSpeed's fp32 gradient partition on the CPU, into which a
reduction at a boundary copies (ZeRO-3 copies the sum of its micro-steps, which it
keeps on the accelerator; GRU makes each backward the first micro-step, so the copy
is that backward alone, and adds what the partition held, as under ZeRO-1/2).
DeepSpeed takes the per-parameter norms it clips with during that copy, so they are
taken again after GRU (``end_micro_batch``).

accelerate's wrapper runs ``engine.backward`` and then, at the boundary,
``engine.step``, which clips and steps; GRU must act between the two, so the
wrapper's backward is bound to ``ZeroGradients.backward`` and ``end_micro_batch``
calls ``engine.step`` after GRU rectified.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from gru_plugin.engines.base import TrainerStepped
from gru_plugin.engines.sharded import per_rank_state_file, sum_over_ranks
from gru_plugin.rectify import Coefficient, RectifyStats, rectify_
from gru_plugin.reference import FlatBuffers, Layout, ReferenceEMA


class ZeroGradients(TrainerStepped):
    """Local gradient pieces, one per trainable parameter that has one on this rank.

    The reference loss runs through the engine (the model the Trainer gives), so
    that its backward lands in the partition; the engine, not the Trainer, steps.
    """

    @staticmethod
    def handles(trainer) -> bool:
        return trainer.is_deepspeed_enabled

    state_file = staticmethod(per_rank_state_file)

    def __init__(self, trainer) -> None:
        from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
        from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

        super().__init__(trainer)
        wrapper = trainer.accelerator.deepspeed_engine_wrapped
        engine = wrapper.engine
        optimizer = engine.optimizer
        if isinstance(optimizer, DeepSpeedZeroOptimizer_Stage3):
            groups = optimizer.fp16_groups
            self.stage3 = True
        elif isinstance(optimizer, DeepSpeedZeroOptimizer):
            groups = optimizer.bit16_groups
            self.stage3 = False
        else:
            raise ValueError(
                f"GRU under DeepSpeed needs a ZeRO optimizer (stage 1, 2 or 3); this "
                f"engine runs {type(optimizer).__name__} (DeepSpeed picks "
                "BF16_Optimizer for bf16 without ZeRO, or with ZeRO-1 and fp32 "
                "gradient accumulation). Set zero_optimization.stage to 1, 2 or 3 in "
                "the DeepSpeed config (ZeRO-1 with the default data_types), or set "
                "gru.enabled=false"
            )
        self.offload = is_offloaded(optimizer)
        if self.offload:
            check_offload(optimizer)
        if self.offload and not self.stage3:
            # Each backward is reduced as at a boundary (above); DeepSpeed's own
            # accumulation across micro-steps on the CPU would add it twice.
            optimizer.gradient_accumulation_steps = 1
        self.engine = engine
        self.optimizer = optimizer
        self.device = trainer.args.device
        self._boundary_hint: bool | None = None
        wrapper.backward = self.backward  # the engine's step is held back
        params = [p for group in groups for p in group]
        if self.stage3:
            self.params = params
        else:  # a parameter outside this rank's partition has no fragment here
            self.params = [p for p in params if p._hp_mapping is not None]

    def __str__(self) -> str:
        where = " (the optimizer offloaded to the CPU)" if self.offload else ""
        stage = self.engine.zero_optimization_stage()
        return f"each rank's DeepSpeed ZeRO-{stage} gradient partition{where}"

    def layout(self) -> Layout:
        """Shape, dtype and device of each local piece, before any backward."""
        if self.offload:  # the fp32 gradient partition on the CPU, there from the start
            return [(piece.shape, piece.dtype, piece.device) for piece in self.read()]
        if self.stage3:
            return [
                (p.ds_tensor.shape, torch.float32, p.ds_tensor.device)
                for p in self.params
            ]
        dtype = self.optimizer.gradient_accumulation_dtype
        return [
            (
                torch.Size([p._hp_mapping.lp_fragment_address.numel]),
                dtype,
                p._hp_mapping.hp_fragment.device,
            )
            for p in self.params
        ]

    def read(self) -> list[torch.Tensor]:
        """The pieces after a backward; ZeRO-1/2's are flat views of the partition."""
        if self.stage3:
            from deepspeed.utils import safe_get_local_grad

            return [safe_get_local_grad(p) for p in self.params]
        return [
            p._hp_mapping.get_lp_grad_fragment(p._index_in_param_group).view(-1)
            for p in self.params
        ]

    def write(self, pieces: list[torch.Tensor]) -> None:
        """Store pieces (ZeRO-3's ``read`` may return copies, e.g. of bf16 grads)."""
        if self.stage3:
            from deepspeed.utils import safe_set_local_grad

            for param, piece in zip(self.params, pieces, strict=True):
                safe_set_local_grad(param, piece)
            return
        for target, piece in zip(self.read(), pieces, strict=True):
            if target.data_ptr() != piece.data_ptr():
                target.copy_(piece)

    def backward(self, loss: torch.Tensor, sync_gradients=None, **kwargs) -> None:
        """accelerate's backward without the step.

        accelerate >= 1.8 passes ``sync_gradients`` (the Trainer's boundary) and
        sets it on the engine; older versions let the engine count micro-steps.
        """
        self._boundary_hint = sync_gradients
        if self.stage3 and not self.offload:  # it adds every backward to the partition
            self._engine_backward(loss, **kwargs)
            return
        held = self._backward_alone(loss, **kwargs)
        if held is not None:
            torch._foreach_add_(self.read(), held)

    def _backward_alone(
        self, loss: torch.Tensor, **kwargs
    ) -> list[torch.Tensor] | None:
        """Back-propagate ``loss`` so that the partition then holds its gradient
        alone; return what the partition held (None: nothing reduced yet)."""
        held = None
        if self.stage3 or self._partition_allocated():
            pieces = self.read()
            held = [piece.clone() for piece in pieces]
            if self.stage3:  # its pieces may be copies
                self.write([torch.zeros_like(piece) for piece in held])
            else:
                torch._foreach_zero_(pieces)
        self._engine_backward(loss, **kwargs)
        return held

    def _partition_allocated(self) -> bool:
        """ZeRO-1/2: the partition exists only after the step's first reduction
        (with offload always: ``end_micro_batch`` zeroes it after each step)."""
        return self.offload or all(
            p._hp_mapping.gradient_dict.get(p._hp_mapping.param_group_index) is not None
            for p in self.params
        )

    def _engine_backward(self, loss: torch.Tensor, **kwargs) -> None:
        """``engine.backward``; ZeRO-1/2, and ZeRO-3 with offload, reduce it as at a
        boundary (see above)."""
        as_boundary = not self.stage3 or self.offload
        reduce_now = True if as_boundary else self._boundary_hint
        if self.stage3 and self.offload:
            # ZeRO-3 copies a micro-step's gradient, rather than adding it, at its
            # first micro-step; the CPU copy then holds this backward alone.
            self.optimizer.micro_step_id = 0
        if reduce_now is not None:
            self.engine.set_gradient_accumulation_boundary(reduce_now)
        try:
            self.engine.backward(loss, **kwargs)
        finally:
            self.engine.set_gradient_accumulation_boundary(self._boundary_hint)

    def backward_reference(
        self,
        loss: torch.Tensor,
        into: Sequence[torch.Tensor] | None,
        alpha: float,
        weight_in_loss: torch.Tensor | None,
        retain_part: FlatBuffers | None = None,
    ) -> None:
        """Back-propagate a retain loss through the engine, on its partition.

        The partition then holds the reference gradient t alone (averaged over
        ranks); t is added as alpha·t to ``into`` (r), and g is put back, plus
        ``weight_in_loss``·t when the method's loss holds it (into ``retain_part``
        instead, when given). Extra memory: one partition copy.
        """
        unlearning = self._backward_alone(loss, scale_wrt_gas=False)
        pieces = self.read()
        if into:
            torch._foreach_add_(into, pieces, alpha=alpha)
        if weight_in_loss is None:
            self.write(unlearning)
            return
        torch._foreach_mul_(pieces, weight_in_loss)
        if retain_part is not None:
            torch._foreach_add_(retain_part.tensors, pieces)
            self.write(unlearning)
        else:
            torch._foreach_add_(pieces, unlearning)
            self.write(pieces)

    def at_boundary(self) -> bool:
        """Whether the engine steps its optimizer after this micro-batch."""
        return self.engine.is_gradient_accumulation_boundary()

    def end_micro_batch(self) -> None:
        """The engine's step, held back from accelerate's backward (see above).

        With offload, DeepSpeed computed each parameter's gradient norm for clipping
        as it copied the last backward into the partition; the norms are taken again
        from what GRU leaves there, and the partition, which DeepSpeed overwrites
        rather than clears, is zeroed after the step.
        """
        stepping = self.offload and self.at_boundary()
        if stepping:
            norms = self.optimizer.norm_for_param_grads
            for param, piece in zip(self.params, self.read(), strict=True):
                norm = torch.linalg.vector_norm(piece, dtype=torch.float64)
                norms[self.optimizer.get_param_id(param)] = norm
        self.engine.step()
        if stepping:
            torch._foreach_zero_(self.read())

    def rectify(
        self,
        reference: ReferenceEMA,
        coefficient: Coefficient,
        retain_part: FlatBuffers | None = None,
    ) -> RectifyStats:
        """g ← rectified g (+ the held retain part, which is then cleared)."""
        pieces = self.read()
        add_over_ranks = functools.partial(sum_over_ranks, device=self.device)
        stats = rectify_(pieces, reference.tensors, coefficient, add_over_ranks)
        if retain_part is not None:
            retain_part.drain_into(pieces)
        if stats.fired or retain_part is not None:
            self.write(pieces)
        return stats


REWORKED_OFFLOAD = (
    "_use_compact_grad_partition_buffer",  # ZeRO-1/2
    "_offload_grad_partition_at_boundary",  # ZeRO-3
)
"""Names a ZeRO optimizer has once DeepSpeed reworked its offload path (0.19.8 has
both, 0.15 neither): GRU maps only 0.15's."""


def is_offloaded(optimizer) -> bool:
    """Whether a ZeRO optimizer keeps its states on the CPU (ZeRO-1/2 say it as
    ``cpu_offload``, ZeRO-3 as ``offload_optimizer``)."""
    return bool(
        getattr(optimizer, "cpu_offload", False)
        or getattr(optimizer, "offload_optimizer", False)
    )


def offload_is_reworked(optimizer) -> bool:
    """Whether this ZeRO optimizer (or its class) runs a reworked offload path."""
    return any(hasattr(optimizer, name) for name in REWORKED_OFFLOAD)


def check_offload(optimizer) -> None:
    """Refuse an optimizer offload GRU does not map, naming the fix."""
    import deepspeed

    if getattr(optimizer, "swap_optimizer", False):
        raise ValueError(
            "GRU does not support offloading the optimizer to NVMe "
            "(zero_optimization.offload_optimizer.device: nvme): set the device to "
            "cpu, or set gru.enabled=false"
        )
    if offload_is_reworked(optimizer):
        raise ValueError(
            "GRU supports DeepSpeed's optimizer offload as DeepSpeed 0.15 (the host's "
            f"pin) runs it; DeepSpeed {deepspeed.__version__} reworked that path "
            "(how micro-steps accumulate and the CPU partition is filled), which GRU "
            "does not map yet: pip install deepspeed==0.15.4, remove "
            "zero_optimization.offload_optimizer from the DeepSpeed config, or set "
            "gru.enabled=false"
        )
