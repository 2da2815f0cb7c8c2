"""The reference gradient r (an EMA) and GRU's state in a Trainer checkpoint.

r lives in one flat buffer per dtype and device, so averaging it across ranks is
one in-place collective; each trainable parameter (or, under ZeRO, this rank's
piece of it) sees r as a view into those buffers. With ``gru.project=forget`` the
method's retain term of g is held the same way until the projection is done.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

Layout = Sequence[tuple[torch.Size, torch.dtype, torch.device]]
"""Shape, dtype and device of each gradient piece that GRU rectifies."""

NONFINITE_KEY = "nonfinite_steps"
"""The count of non-finite steps, saved beside r (``ema.<parameter name>``)."""


class FlatBuffers:
    """One tensor per piece of a ``Layout``, as views into one flat buffer per
    dtype and device (so a collective over all of them is one call per buffer)."""

    def __init__(self, layout: Layout) -> None:
        sizes: dict[tuple[torch.dtype, torch.device], int] = {}
        for shape, dtype, device in layout:
            sizes[dtype, device] = sizes.get((dtype, device), 0) + shape.numel()
        by_kind = {
            kind: torch.zeros(n, dtype=kind[0], device=kind[1])
            for kind, n in sizes.items()
        }
        offsets = dict.fromkeys(by_kind, 0)
        self.tensors: list[torch.Tensor] = []
        for shape, dtype, device in layout:
            start, end = offsets[dtype, device], offsets[dtype, device] + shape.numel()
            offsets[dtype, device] = end
            self.tensors.append(by_kind[dtype, device][start:end].view(shape))
        self.buffers = list(by_kind.values())

    def restart(self) -> None:
        """Every tensor ← 0."""
        torch._foreach_zero_(self.buffers)

    def drain_into(self, tensors: Sequence[torch.Tensor | None]) -> None:
        """Add each tensor here into its counterpart in ``tensors`` (a None one is
        skipped), then zero them all: a held part handed over once."""
        present = [i for i, tensor in enumerate(tensors) if tensor is not None]
        torch._foreach_add_(
            [tensors[i] for i in present], [self.tensors[i] for i in present]
        )
        self.restart()


class ReferenceEMA(FlatBuffers):
    """r ← γ·fresh + (1−γ)·r, with r₀ = 0, for the pieces of one ``Layout``."""

    def __init__(self, layout: Layout, names: Sequence[str]) -> None:
        super().__init__(layout)
        self.names = [f"ema.{name}" for name in names]

    def decay(self, gamma: float) -> None:
        """The step's first micro-batch: r ← (1−γ)·r, before the fresh part comes."""
        torch._foreach_mul_(self.tensors, 1.0 - gamma)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.tensors, strict=True))

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.names):
            raise ValueError(
                "the checkpoint's GRU state holds another set of parameters than "
                "this run trains; resume with the same trainer settings"
            )
        for name, tensor in zip(self.names, self.tensors, strict=True):
            tensor.copy_(state[name])


def save_gru_state(path: str, reference: ReferenceEMA, nonfinite_steps: int) -> None:
    """Write r and the non-finite count into one safetensors file."""
    state = {name: t.contiguous() for name, t in reference.state_dict().items()}
    state[NONFINITE_KEY] = torch.tensor(nonfinite_steps)
    save_file(state, path)


def load_gru_state(path: str) -> tuple[dict[str, torch.Tensor] | None, int]:
    """r's tensors by name and the non-finite count; (None, 0) without the file."""
    if not os.path.exists(path):
        logger.warning("GRU: no %s; the reference EMA restarts from zero", path)
        return None, 0
    state = load_file(path)
    nonfinite = int(state.pop(NONFINITE_KEY, torch.tensor(0)))
    return state, nonfinite


def parameter_names(
    model: torch.nn.Module, params: Sequence[torch.Tensor]
) -> list[str]:
    """The names ``model`` gives ``params``: the keys of r in a checkpoint."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [names[id(param)] for param in params]
