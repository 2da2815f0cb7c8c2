"""This rank's piece of the gradient a DeepSpeed ZeRO engine accumulates.

Under DeepSpeed ``param.grad`` is None: the engine reduces every backward into
gradient partitions of its own, and each rank holds only its partition. GRU reads
and writes those partitions in place, so its reference EMA is sharded the same way
and no full gradient is ever gathered. ZeRO-3 offers a public local API for this;
ZeRO-1/2 keep the partition of each parameter as a fragment that its ``_hp_mapping``
points to (the same fragment ``safe_set_full_grad`` writes).

ZeRO-1 reduces only at the accumulation boundary and keeps the micro-steps before
it in ``param.grad``, unreduced; GRU makes it reduce at every backward, as ZeRO-2
does, so that the partition always holds the global sum so far.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class ZeroGradients:
    """Local gradient pieces, one per trainable parameter that has one on this rank."""

    def __init__(self, engine) -> None:
        from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
        from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

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
        if getattr(optimizer, "cpu_offload", False) or getattr(
            optimizer, "offload_optimizer", False
        ):
            raise ValueError(
                "GRU does not support DeepSpeed's optimizer offload yet: remove "
                "zero_optimization.offload_optimizer from the DeepSpeed config, or "
                "set gru.enabled=false"
            )
        self.engine = engine
        self.optimizer = optimizer
        params = [p for group in groups for p in group]
        if self.stage3:
            self.params = params
        else:  # a parameter outside this rank's partition has no fragment here
            self.params = [p for p in params if p._hp_mapping is not None]

    def layout(self) -> list[tuple[torch.Size, torch.dtype, torch.device]]:
        """Shape, dtype and device of each local piece, before any backward."""
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

    def at_boundary(self) -> bool:
        """Whether the engine steps its optimizer after this micro-batch."""
        return self.engine.is_gradient_accumulation_boundary()

    @contextlib.contextmanager
    def reducing_every_backward(self) -> Iterator[None]:
        """Make ZeRO-1 reduce each backward into its partition, as ZeRO-2/3 do."""
        if self.stage3 or self.optimizer.partition_gradients:
            yield
            return
        self.engine.set_gradient_accumulation_boundary(True)
        try:
            yield
        finally:
            self.engine.set_gradient_accumulation_boundary(None)
