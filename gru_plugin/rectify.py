"""The GRU update rule in pure torch: no host, no Trainer, no distributed code.

Every reduction (dot products, squared norms) runs per tensor in float32 and is summed
in float64, so bf16/fp16 gradients never decide the sign test in low precision; a
tensor whose float32 sums overflow is redone scaled to unit max.
Nothing is flattened or copied to the CPU: one host sync per call reads the three
scalars that the strategy needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass

import torch

Coefficient = Callable[[float, float, float], float]
"""``coef = f(dot, grad_sq, ref_sq)``; the rectified gradient is ``g - coef * r``."""

SumReduction = Callable[[tuple[float, float, float]], tuple[float, float, float]]
"""Turns this process's ``(dot, grad_sq, ref_sq)`` into the global sums, when each
process holds only a shard of g and r (e.g. an all-reduce over ranks)."""


@dataclass(frozen=True)
class RectifyStats:
    """What one rectification saw and did; all but ``cos_after`` are taken before."""

    dot: float
    cos: float
    coef: float
    fired: bool
    grad_norm: float
    ref_norm: float
    cos_after: float

    @property
    def finite(self) -> bool:
        """False when g or r held a NaN or an infinity (then nothing was changed)."""
        return all(math.isfinite(x) for x in (self.dot, self.grad_norm, self.ref_norm))


def project_coefficient(dot: float, grad_sq: float, ref_sq: float) -> float:
    """The paper's rule: remove the conflicting component only when ⟨g, r⟩ < 0."""
    if dot < 0.0 and ref_sq > 0.0:
        return dot / ref_sq
    return 0.0


def _check_pair(
    grads: Sequence[torch.Tensor | None], reference: Sequence[torch.Tensor]
):
    if len(grads) != len(reference):
        raise ValueError(
            f"rectify_: {len(grads)} gradients but {len(reference)} reference tensors"
        )
    for index, (g, r) in enumerate(zip(grads, reference, strict=True)):
        if g is not None and g.shape != r.shape:
            raise ValueError(
                f"rectify_: tensor {index} has shape {tuple(g.shape)} in grads but "
                f"{tuple(r.shape)} in reference"
            )


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a.reshape(-1).float(), b.reshape(-1).float()).double()


def _scaled_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """⟨a, b⟩ without float32 overflow: both scaled to max |x| = 1 first."""
    scale_a, scale_b = a.abs().max().double(), b.abs().max().double()
    if scale_a == 0 or scale_b == 0:
        return 0.0
    unit = _dot((a.float() / scale_a.float()), (b.float() / scale_b.float()))
    return (unit * scale_a * scale_b).item()


def _per_tensor_sums(
    grads: Sequence[torch.Tensor | None], reference: Sequence[torch.Tensor]
) -> list[list[float]]:
    """Rows of ⟨g, r⟩, ‖g‖², ‖r‖² per tensor, read with a single host sync.

    A row that overflowed float32 (|x| beyond ~1e19) is redone scaled, so only
    real NaN/inf in g or r make a sum non-finite.
    """
    if not grads:
        return []
    zero = torch.zeros((), dtype=torch.float64, device=reference[0].device)
    rows = torch.stack(
        [
            torch.stack(
                [zero, zero, _dot(r, r)]
                if g is None
                else [_dot(g, r), _dot(g, g), _dot(r, r)]
            )
            for g, r in zip(grads, reference, strict=True)
        ]
    ).tolist()
    for row, g, r in zip(rows, grads, reference, strict=True):
        if not all(math.isfinite(x) for x in row):
            pairs = [(r, r)] if g is None else [(g, r), (g, g), (r, r)]
            row[3 - len(pairs) :] = [_scaled_dot(a, b) for a, b in pairs]
    return rows


def _cos(dot: float, a_sq: float, b_sq: float) -> float:
    denominator = math.sqrt(a_sq) * math.sqrt(b_sq)
    return dot / denominator if denominator > 0.0 else 0.0


def rectify_(
    grads: MutableSequence[torch.Tensor | None],
    reference: Sequence[torch.Tensor],
    coefficient: Coefficient = project_coefficient,
    reduce_sums: SumReduction | None = None,
) -> RectifyStats:
    """Rectify ``grads`` in place against ``reference``: ``g ← g − coef·r``.

    ``grads`` and ``reference`` are matching lists of tensors (one per parameter);
    the coefficient is global, computed from the sums over all of them. With the
    default ``coefficient`` this is the GRU projection: when ⟨g, r⟩ < 0 the
    conflicting component is removed, otherwise ``grads`` is untouched. A zero or
    non-finite reference leaves ``grads`` untouched. A ``None`` gradient is a zero
    one (a parameter the loss did not reach); only if the rectification changes it
    (its reference is not zero) is it replaced, in the list, by ``−coef·r``.
    With ``reduce_sums`` the lists are this process's shard, and every shard gets
    the same coefficient.
    """
    _check_pair(grads, reference)
    rows = _per_tensor_sums(grads, reference)
    sums = tuple(sum(row[k] for row in rows) for k in range(3))
    dot, grad_sq, ref_sq = reduce_sums(sums) if reduce_sums else sums
    finite = all(math.isfinite(x) for x in (dot, grad_sq, ref_sq))
    coef = coefficient(dot, grad_sq, ref_sq) if finite else 0.0
    if not math.isfinite(coef):
        coef = 0.0
    fired = coef != 0.0
    if fired:
        present = [i for i, g in enumerate(grads) if g is not None]
        if present:
            torch._foreach_add_(
                [grads[i] for i in present],
                [reference[i] for i in present],
                alpha=-coef,
            )
        for i, g in enumerate(grads):
            if g is None and rows[i][2] != 0.0:
                grads[i] = reference[i] * -coef
    dot_after = dot - coef * ref_sq
    grad_sq_after = max(grad_sq - 2.0 * coef * dot + coef * coef * ref_sq, 0.0)
    return RectifyStats(
        dot=dot,
        cos=_cos(dot, grad_sq, ref_sq),
        coef=coef,
        fired=fired,
        grad_norm=math.sqrt(grad_sq),
        ref_norm=math.sqrt(ref_sq),
        cos_after=_cos(dot_after, grad_sq_after, ref_sq),
    )
