"""The reference EMA: r ← γ·fresh + (1−γ)·r, r₀ = 0; γ weighs the fresh gradient."""

import pytest
import torch

from gru_plugin.rectify import ema_update_


def test_first_step_is_gamma_times_fresh_then_geometric_weights():
    ema = [torch.zeros(3)]
    fresh = [torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])]
    ema_update_(ema, [fresh[0]], 0.8)
    assert torch.allclose(ema[0], torch.tensor([0.8, 0, 0]))
    ema_update_(ema, [fresh[1]], 0.8)
    assert torch.allclose(ema[0], torch.tensor([0.16, 0.8, 0]))


def test_gamma_one_means_no_memory():
    ema = [torch.full((2,), 5.0)]
    ema_update_(ema, [torch.tensor([1.0, -1.0])], 1.0)
    assert torch.equal(ema[0], torch.tensor([1.0, -1.0]))


def test_missing_gradient_decays():
    ema = [torch.ones(2), torch.ones(2)]
    ema_update_(ema, [None, torch.zeros(2)], 0.25)
    assert torch.allclose(ema[0], torch.full((2,), 0.75))
    assert torch.allclose(ema[1], torch.full((2,), 0.75))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place(dtype):
    buffer = torch.zeros(4, dtype=dtype)
    ema_update_([buffer], [torch.ones(4, dtype=dtype)], 0.5)
    assert buffer.dtype == dtype and torch.allclose(
        buffer.float(), torch.full((4,), 0.5)
    )
