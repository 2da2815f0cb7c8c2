"""r's flat buffers, its EMA and its checkpoint file, without a Trainer."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from gru_plugin.reference import (
    NONFINITE_KEY,
    FlatBuffers,
    ReferenceEMA,
    load_gru_state,
    parameter_names,
    save_gru_state,
)

CPU, META = torch.device("cpu"), torch.device("meta")
LAYOUT = [
    (torch.Size([2, 3]), torch.float32, CPU),
    (torch.Size([4]), torch.float64, CPU),
    (torch.Size([5]), torch.float32, CPU),
    (torch.Size([3]), torch.float32, META),
]
"""Two pieces share a buffer (float32 on the CPU); the others are alone in theirs."""


def test_pieces_of_one_kind_share_one_buffer_in_layout_order():
    buffers = FlatBuffers(LAYOUT)
    assert [(t.shape, t.dtype, t.device) for t in buffers.tensors] == LAYOUT
    kinds = [(b.dtype, b.device, b.numel()) for b in buffers.buffers]
    assert kinds == [(torch.float32, CPU, 11), (torch.float64, CPU, 4)] + [
        (torch.float32, META, 3)
    ]
    assert all(t.abs().max() == 0 for t in buffers.tensors[:3])
    shared = buffers.buffers[0]
    shared.copy_(torch.arange(11.0))
    assert torch.equal(buffers.tensors[0], torch.arange(6.0).view(2, 3))
    assert torch.equal(buffers.tensors[2], torch.arange(6.0, 11.0))
    buffers.buffers[1].fill_(7.0)
    assert torch.equal(buffers.tensors[1], torch.full((4,), 7.0, dtype=torch.float64))


def test_restart_zeroes_every_piece():
    buffers = FlatBuffers(LAYOUT[:3])
    for tensor in buffers.tensors:
        tensor.fill_(3.0)
    buffers.restart()
    assert all(b.abs().max() == 0 for b in buffers.buffers)


def test_drain_into_adds_once_skips_missing_then_clears():
    buffers = FlatBuffers(LAYOUT[:3])
    for value, tensor in enumerate(buffers.tensors, start=1):
        tensor.fill_(float(value))
    grads = [torch.ones(2, 3), None, torch.full((5,), 10.0)]
    buffers.drain_into(grads)
    assert torch.equal(grads[0], torch.full((2, 3), 2.0))
    assert grads[1] is None
    assert torch.equal(grads[2], torch.full((5,), 13.0))
    assert all(b.abs().max() == 0 for b in buffers.buffers)
    buffers.drain_into(grads)  # nothing is held any more: nothing is added
    assert torch.equal(grads[2], torch.full((5,), 13.0))


def test_decay_keeps_one_minus_gamma_of_r():
    ema = ReferenceEMA(LAYOUT[:2], ["a", "b"])
    ema.tensors[0].fill_(2.0)
    ema.tensors[1].fill_(-4.0)
    ema.decay(0.75)
    assert torch.equal(ema.tensors[0], torch.full((2, 3), 0.5))
    assert torch.equal(ema.tensors[1], torch.full((4,), -1.0, dtype=torch.float64))


def test_state_dict_names_each_piece_and_loads_back():
    ema = ReferenceEMA(LAYOUT[:2], ["layer.weight", "layer.bias"])
    ema.tensors[0].copy_(torch.arange(6.0).view(2, 3))
    state = ema.state_dict()
    assert list(state) == ["ema.layer.weight", "ema.layer.bias"]
    assert torch.equal(state["ema.layer.weight"], torch.arange(6.0).view(2, 3))
    other = ReferenceEMA(LAYOUT[:2], ["layer.weight", "layer.bias"])
    other.load_state_dict({k: v.clone() for k, v in state.items()})
    assert all(
        torch.equal(a, b) for a, b in zip(other.tensors, ema.tensors, strict=True)
    )
    assert other.tensors[0].data_ptr() == other.buffers[0].data_ptr()  # still views


def test_loading_another_runs_parameters_is_refused():
    ema = ReferenceEMA(LAYOUT[:2], ["a", "b"])
    with pytest.raises(ValueError) as error:
        ema.load_state_dict({"ema.a": torch.zeros(2, 3)})
    assert str(error.value) == (
        "the checkpoint's GRU state holds another set of parameters than this run "
        "trains; resume with the same trainer settings"
    )
    with pytest.raises(ValueError, match="another set of parameters"):
        ema.load_state_dict(
            {
                "ema.a": torch.zeros(2, 3),
                "ema.b": torch.zeros(4),
                "ema.c": torch.ones(1),
            }
        )
    assert all(t.abs().max() == 0 for t in ema.tensors)


def test_names_that_do_not_match_the_pieces_are_an_error():
    """One name per piece of r, or no checkpoint: never a silently short one."""
    ema = ReferenceEMA(LAYOUT[:2], ["a"])
    with pytest.raises(ValueError, match="zip"):
        ema.state_dict()
    with pytest.raises(ValueError, match="zip"):
        ema.load_state_dict({"ema.a": torch.ones(2, 3)})


def test_state_file_round_trip(tmp_path):
    ema = ReferenceEMA(LAYOUT[:3], ["w", "b", "v"])
    for value, tensor in enumerate(ema.tensors, start=1):
        tensor.fill_(value / 4)
    path = str(tmp_path / "gru_state.safetensors")
    save_gru_state(path, ema, nonfinite_steps=3)
    state, nonfinite = load_gru_state(path)
    assert nonfinite == 3
    assert sorted(state) == ["ema.b", "ema.v", "ema.w"]
    restored = ReferenceEMA(LAYOUT[:3], ["w", "b", "v"])
    restored.load_state_dict(state)
    assert all(
        torch.equal(a, b) for a, b in zip(restored.tensors, ema.tensors, strict=True)
    )


def test_a_state_file_without_the_count_counts_zero(tmp_path):
    """A file holding r alone (no non-finite count) resumes with the count at 0."""
    path = str(tmp_path / "gru_state.safetensors")
    save_file({"ema.w": torch.ones(2)}, path)
    state, nonfinite = load_gru_state(path)
    assert nonfinite == 0 and list(state) == ["ema.w"]
    assert NONFINITE_KEY not in state


def test_a_missing_state_file_restarts_r_with_a_warning(tmp_path, caplog):
    path = str(tmp_path / "gru_state.safetensors")
    with caplog.at_level(logging.WARNING, logger="gru_plugin.reference"):
        assert load_gru_state(path) == (None, 0)
    assert caplog.messages == [f"GRU: no {path}; the reference EMA restarts from zero"]


def test_parameter_names_follow_the_given_order():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    params = [model[1].bias, model[0].weight]
    assert parameter_names(model, params) == ["1.bias", "0.weight"]
