"""LocalGradients (one process, or DDP) on a toy module, without a Trainer.

Every loss here is linear in the parameters, ``sum(c · p)``, so its gradient is
``c`` exactly and what the reference backward must leave is written down; what
``rectify`` must leave is ``rectify_`` applied to copies. Two ranks are simulated
by an ``all_reduce`` whose other rank holds ones.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from gru_plugin.engines.local import LocalGradients
from gru_plugin.rectify import RectifyStats, project_coefficient, rectify_
from gru_plugin.reference import FlatBuffers, ReferenceEMA

F64, F32, BF16 = torch.float64, torch.float32, torch.bfloat16


class Toy(torch.nn.Module):
    """Parameters of three dtypes. By default ``weight`` and ``bias`` are optimized
    and ``extra`` is trained but not by this optimizer (as RMU selects layers);
    ``frozen`` is not trained."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2, 3, dtype=F64))
        self.bias = torch.nn.Parameter(torch.zeros(3, dtype=F32))
        self.extra = torch.nn.Parameter(torch.zeros(2, dtype=BF16))
        self.frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)


def toy_trainer(
    engine: DistributedType = DistributedType.NO,
    processes: int = 1,
    optimized: tuple[str, ...] = ("weight", "bias"),
) -> SimpleNamespace:
    """What LocalGradients reads of a Trainer: model, optimizer and accelerator."""
    model = Toy()
    groups = [{"params": [getattr(model, name)]} for name in optimized]
    return SimpleNamespace(
        model=model,
        optimizer=SimpleNamespace(param_groups=groups),
        accelerator=SimpleNamespace(distributed_type=engine, num_processes=processes),
    )


def linear_loss(model: Toy, **coefficients: torch.Tensor) -> torch.Tensor:
    return sum((getattr(model, name) * c).sum() for name, c in coefficients.items())


CW = torch.tensor([[1.0, -2.0, 0.5], [4.0, 0.0, -1.0]], dtype=F64)
CB = torch.tensor([2.0, -1.0, 3.0], dtype=F32)
CE = torch.tensor([5.0, -5.0], dtype=BF16)
"""The reference loss's gradient for weight, bias and extra."""


def retain_loss(model: Toy) -> torch.Tensor:
    return linear_loss(model, weight=CW, bias=CB, extra=CE)


def set_grads(model: Toy) -> tuple[torch.Tensor, torch.Tensor]:
    """The method's g: weight and extra have one, bias none (its loss missed it)."""
    model.weight.grad = torch.full((2, 3), -1.0, dtype=F64)
    model.bias.grad = None
    model.extra.grad = torch.full((2,), 7.0, dtype=BF16)
    return model.weight.grad.clone(), model.extra.grad.clone()


@pytest.mark.parametrize("engine", list(DistributedType))
def test_owns_all_but_deepspeed_and_fsdp(engine):
    trainer = toy_trainer(engine=engine)
    expected = engine not in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    assert LocalGradients.handles(trainer) is expected


def test_state_file_is_the_one_checkpoints_hold():
    assert LocalGradients.state_file(toy_trainer()) == "gru_state.safetensors"


def test_rectifies_the_optimizers_parameters_once_each_in_order():
    trainer = toy_trainer()
    model = trainer.model
    trainer.optimizer.param_groups = [
        {"params": [model.bias]},
        {"params": [model.weight, model.bias]},
    ]
    engine = LocalGradients(trainer)
    assert [id(p) for p in engine.params] == [id(model.bias), id(model.weight)]
    assert engine.layout() == [
        (torch.Size([3]), F32, torch.device("cpu")),
        (torch.Size([2, 3]), F64, torch.device("cpu")),
    ]


def test_the_reference_runs_through_the_bare_module():
    trainer = toy_trainer()
    wrapper = torch.nn.Sequential(trainer.model)  # as DDP wraps it
    assert LocalGradients(trainer).reference_model(wrapper) is trainer.model


def test_reference_backward_fills_r_and_leaves_g():
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, g_extra = set_grads(model)
    r = [torch.ones(2, 3, dtype=F64), torch.ones(3, dtype=F32)]
    engine.backward_reference(retain_loss(model), r, alpha=0.25, weight_in_loss=None)
    assert torch.equal(r[0], 1 + 0.25 * CW) and torch.equal(r[1], 1 + 0.25 * CB)
    assert torch.equal(model.weight.grad, g_weight) and model.bias.grad is None
    assert torch.equal(model.extra.grad, g_extra)  # no r of its own, g kept
    assert model.frozen.grad is None


def test_fast_path_adds_the_weighted_retain_gradient_to_g():
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, g_extra = set_grads(model)
    r = [torch.zeros(2, 3, dtype=F64), torch.zeros(3, dtype=F32)]
    weight = torch.tensor(0.5)
    engine.backward_reference(retain_loss(model), r, 0.25, weight)
    assert torch.equal(r[0], 0.25 * CW) and torch.equal(r[1], 0.25 * CB)
    assert torch.equal(model.weight.grad, g_weight + 0.5 * CW)
    assert torch.equal(model.bias.grad, 0.5 * CB) and model.bias.grad.dtype == F32
    assert torch.equal(model.extra.grad, g_extra + 0.5 * CE)


def test_a_new_g_keeps_its_parameters_dtype():
    """A retain loss of shape (1,) gives a float32 weight of shape (1,), which
    would promote a bf16 piece: g is still made in the parameter's dtype."""
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    set_grads(model)
    model.extra.grad = None
    engine.backward_reference(retain_loss(model), None, 1.0, torch.tensor([0.5]))
    assert model.extra.grad.dtype == BF16
    assert torch.equal(model.extra.grad, 0.5 * CE)


def test_a_second_retain_term_reaches_g_but_not_r():
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    engine.backward_reference(retain_loss(model), None, 0.25, torch.tensor(2.0))
    assert torch.equal(model.weight.grad, g_weight + 2 * CW)
    assert torch.equal(model.bias.grad, 2 * CB)


def test_project_forget_holds_the_retain_part_out_of_g():
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    r = [torch.zeros(2, 3, dtype=F64), torch.zeros(3, dtype=F32)]
    held = FlatBuffers(engine.layout())
    engine.backward_reference(retain_loss(model), r, 0.25, torch.tensor(0.5), held)
    assert torch.equal(r[0], 0.25 * CW) and torch.equal(r[1], 0.25 * CB)
    assert torch.equal(held.tensors[0], 0.5 * CW)
    assert torch.equal(held.tensors[1], 0.5 * CB)
    assert torch.equal(model.weight.grad, g_weight)
    # The held term will come after the projection: bias's g is zero, not None.
    assert torch.equal(model.bias.grad, torch.zeros(3, dtype=F32))


def test_an_unweighted_pass_holds_nothing_back():
    """Off the fast path the reference pass is not in the method's loss: a
    held retain part, if passed, is left as it is."""
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    r = [torch.zeros(2, 3, dtype=F64), torch.zeros(3, dtype=F32)]
    held = FlatBuffers(engine.layout())
    engine.backward_reference(retain_loss(model), r, 1.0, None, held)
    assert torch.equal(r[0], CW) and torch.equal(r[1], CB)
    assert all(buffer.abs().max() == 0 for buffer in held.buffers)
    assert torch.equal(model.weight.grad, g_weight) and model.bias.grad is None


def test_r_or_a_held_part_of_another_length_is_an_error():
    """r and the held part hold one piece per rectified parameter: a short list is
    an error, never pieces of r silently left empty."""
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    with pytest.raises(ValueError, match="zip"):
        engine.backward_reference(retain_loss(model), [torch.zeros(2, 3)], 1.0, None)
    short = FlatBuffers(engine.layout()[:1])
    with pytest.raises(ValueError, match="zip"):
        engine.backward_reference(
            retain_loss(model), None, 1.0, torch.tensor(1.0), short
        )


class FailingBackward(torch.autograd.Function):
    """The identity, whose backward fails half-way through a reference pass."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward failed")


def test_a_failed_backward_restores_g_and_removes_the_hooks():
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    r = [torch.zeros(2, 3, dtype=F64), torch.zeros(3, dtype=F32)]
    loss = (FailingBackward.apply(model.weight) * CW).sum()
    with pytest.raises(RuntimeError, match="backward failed"):
        engine.backward_reference(loss, r, 1.0, None)
    assert torch.equal(model.weight.grad, g_weight) and model.bias.grad is None
    retain_loss(model).backward()  # a plain backward accumulates into g again
    assert torch.equal(model.weight.grad, g_weight + CW)
    assert torch.equal(model.bias.grad, CB)
    assert torch.equal(r[0], torch.zeros(2, 3, dtype=F64))


def reference_of(
    engine: LocalGradients, weight: torch.Tensor, bias: torch.Tensor
) -> ReferenceEMA:
    reference = ReferenceEMA(engine.layout(), ["weight", "bias"])
    reference.tensors[0].copy_(weight)
    reference.tensors[1].copy_(bias)
    return reference


R_WEIGHT = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 1.0]], dtype=F64)
R_BIAS = torch.tensor([1.0, 0.0, -1.0], dtype=F32)


def expected_rectified(
    g_weight: torch.Tensor, r_weight: torch.Tensor, r_bias: torch.Tensor
) -> tuple[RectifyStats, list[torch.Tensor | None]]:
    """rectify_ on copies: the engine must do exactly this to param.grad."""
    grads = [g_weight.clone(), None]
    stats = rectify_(grads, [r_weight, r_bias])
    return stats, grads


def test_rectify_projects_param_grad_and_fills_a_missing_one():
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    reference = reference_of(engine, R_WEIGHT, R_BIAS)
    stats = engine.rectify(reference, project_coefficient)
    want, grads = expected_rectified(g_weight, R_WEIGHT, R_BIAS)
    assert stats == want and stats.fired
    assert torch.equal(model.weight.grad, grads[0])
    assert torch.equal(model.bias.grad, grads[1]) and model.bias.grad.dtype == F32
    assert torch.equal(reference.tensors[0], R_WEIGHT)  # r is not changed


def test_rectify_leaves_a_missing_grad_missing_when_nothing_fires():
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    stats = engine.rectify(reference_of(engine, -R_WEIGHT, R_BIAS), project_coefficient)
    assert not stats.fired
    assert torch.equal(model.weight.grad, g_weight) and model.bias.grad is None


def test_rectify_uses_the_strategys_coefficient():
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    stats = engine.rectify(reference_of(engine, R_WEIGHT, R_BIAS), lambda *_: 0.5)
    assert stats.coef == 0.5
    assert torch.equal(model.weight.grad, g_weight - 0.5 * R_WEIGHT)
    assert torch.equal(model.bias.grad, -0.5 * R_BIAS)


def test_the_held_retain_part_is_added_after_the_projection_and_cleared():
    trainer = toy_trainer()
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    held = FlatBuffers(engine.layout())
    held.tensors[0].fill_(10.0)  # alone it would align g with r: no projection
    held.tensors[1].fill_(3.0)
    stats = engine.rectify(
        reference_of(engine, R_WEIGHT, R_BIAS), project_coefficient, held
    )
    want, grads = expected_rectified(g_weight, R_WEIGHT, R_BIAS)
    assert stats == want and stats.fired
    assert torch.equal(model.weight.grad, grads[0] + 10.0)
    assert torch.equal(model.bias.grad, grads[1] + 3.0)
    assert all(buffer.abs().max() == 0 for buffer in held.buffers)


@pytest.fixture
def two_ranks(monkeypatch) -> list[torch.Tensor]:
    """A second rank whose r, g and held part are all ones; the tensors reduced."""
    reduced = []

    def all_reduce(tensor, *args, **kwargs):
        reduced.append(tensor)
        tensor.add_(1.0)

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    return reduced


def test_two_ranks_average_r_and_the_held_part_but_not_reduced_g(two_ranks):
    """Without a retain term added to g, g is as DDP reduced it: left alone."""
    trainer = toy_trainer(processes=2)
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    reference = reference_of(engine, R_WEIGHT, R_BIAS)
    held = FlatBuffers(engine.layout())
    held.tensors[0].fill_(3.0)
    stats = engine.rectify(reference, project_coefficient, held)
    r_weight, r_bias = (R_WEIGHT + 1) / 2, (R_BIAS + 1) / 2
    assert torch.equal(reference.tensors[0], r_weight)
    assert torch.equal(reference.tensors[1], r_bias)
    want, grads = expected_rectified(g_weight, r_weight, r_bias)
    assert stats == want and stats.fired
    assert torch.equal(model.weight.grad, grads[0] + 2.0)  # held: (3 + 1) / 2
    assert torch.equal(model.bias.grad, grads[1] + 0.5)  # held: (0 + 1) / 2
    assert len(two_ranks) == len(reference.buffers) + len(held.buffers) == 4


def never_fires(dot: float, grad_sq: float, ref_sq: float) -> float:
    return 0.0


def test_two_ranks_average_g_once_after_the_fast_path_added_to_it(two_ranks):
    """g of each dtype is averaged exactly once, then not again at the next step."""
    trainer = toy_trainer(processes=2, optimized=("weight", "bias", "extra"))
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, g_extra = set_grads(model)
    model.bias.grad = torch.full((3,), 2.0, dtype=F32)
    reference = ReferenceEMA(engine.layout(), ["weight", "bias", "extra"])
    weight = torch.tensor(1.0)
    engine.backward_reference(retain_loss(model), reference.tensors, 1.0, weight)
    local = [g_weight + CW, 2.0 + CB, g_extra + CE]
    assert not engine.rectify(reference, never_fires).fired
    for param, grad in zip(engine.params, local, strict=True):
        assert torch.equal(param.grad, (grad + 1) / 2)
    assert torch.equal(reference.tensors[0], (CW + 1) / 2)
    # r's three buffers, then g: one flat tensor per dtype.
    assert len(two_ranks) == 6
    assert {t.dtype for t in two_ranks[3:]} == {F64, F32, BF16}
    two_ranks.clear()
    engine.rectify(reference, never_fires)  # no new retain term in g
    assert len(two_ranks) == 3
    assert torch.equal(model.weight.grad, (local[0] + 1) / 2)


def test_g_stays_local_until_rectify_whatever_passes_follow(two_ranks):
    """Once a retain term was added to g, g is averaged at the step's rectify,
    even if a pass outside the method's loss came after it."""
    trainer = toy_trainer(processes=2)
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    reference = ReferenceEMA(engine.layout(), ["weight", "bias"])
    engine.backward_reference(retain_loss(model), None, 1.0, torch.tensor(1.0))
    engine.backward_reference(retain_loss(model), reference.tensors, 1.0, None)
    engine.rectify(reference, never_fires)
    assert torch.equal(model.weight.grad, (g_weight + CW + 1) / 2)
    assert len(two_ranks) == 4


@pytest.mark.parametrize("held", [False, True])
def test_g_that_ddp_reduced_is_not_averaged_again(two_ranks, held):
    """Neither a reference pass outside the method's loss nor a retain term held
    out of g makes g local: only r (and the held part) are averaged."""
    trainer = toy_trainer(processes=2)
    model, engine = trainer.model, LocalGradients(trainer)
    g_weight, _ = set_grads(model)
    reference = ReferenceEMA(engine.layout(), ["weight", "bias"])
    part = FlatBuffers(engine.layout()) if held else None
    weight = torch.tensor(1.0) if held else None
    engine.backward_reference(retain_loss(model), reference.tensors, 1.0, weight, part)
    engine.rectify(reference, never_fires, part)
    expected = g_weight + (1.0 + CW) / 2 if held else g_weight
    assert torch.equal(model.weight.grad, expected)
    assert len(two_ranks) == 2 + 2 * held


def test_one_process_reduces_nothing(two_ranks):
    trainer = toy_trainer(processes=1)
    model, engine = trainer.model, LocalGradients(trainer)
    set_grads(model)
    reference = ReferenceEMA(engine.layout(), ["weight", "bias"])
    engine.backward_reference(
        retain_loss(model), reference.tensors, 1.0, torch.tensor(1.0)
    )
    engine.rectify(reference, project_coefficient)
    assert two_ranks == []
    assert torch.equal(reference.tensors[0], CW)
