"""GRU inside the real open-unlearning host: every method, both config styles."""

from __future__ import annotations

import math

import pytest
import torch
from host_runs import METHOD_OVERRIDES, assert_close_weights, assert_same_weights

from gru_plugin.upstream import METHODS

OTHERS = ["DPO", "UNDIAL", "WGA", "SatImp", "CEU", "PDU"]
GRU_KEYS = {
    "gru/cos",
    "gru/cos_after",
    "gru/dot",
    "gru/coef",
    "gru/fired",
    "gru/grad_norm",
    "gru/ref_norm",
}
STEPS = 3


def assert_gru_run(run) -> None:
    """Saved a model; one complete, consistent gru/* entry per optimizer step."""
    assert (run.out / "model.safetensors").is_file()
    logs = run.gru_logs
    assert len(logs) == STEPS
    for entry in logs:
        assert GRU_KEYS <= set(entry)
        assert all(math.isfinite(entry[key]) for key in GRU_KEYS)
        if entry["gru/fired"]:
            assert entry["gru/dot"] < 0
            assert entry["gru/cos_after"] >= -1e-6
        else:
            assert entry["gru/coef"] == 0.0


def method(name: str) -> list[str]:
    return METHOD_OVERRIDES.get(name, [])


@pytest.mark.parametrize("name", list(METHODS))
def test_plus_gru(run_host, name):
    assert_gru_run(run_host(f"trainer={name}", "+gru=default", *method(name)))


@pytest.mark.parametrize("name", list(METHODS))
def test_gru_variant_config(run_host, name):
    assert_gru_run(run_host(f"trainer={name}_GRU", *method(name)))


@pytest.mark.parametrize("name", OTHERS)
def test_other_registered_methods(run_host, name):
    assert_gru_run(run_host(f"trainer={name}", "+gru=default", *method(name)))


@pytest.mark.parametrize("name", ["GradAscent", "RMU"])
def test_disabled_equals_base(run_host, name):
    base = run_host(f"trainer={name}", *method(name))
    disabled = run_host(
        f"trainer={name}", "+gru=default", "gru.enabled=false", *method(name)
    )
    assert disabled.gru_logs == []
    assert_same_weights(base, disabled)


@pytest.mark.parametrize(
    ("name", "fast_path"),
    [("GradAscent", "true"), ("NPO", "false"), ("NPO", "true"), ("GradDiff", "true")],
)
def test_never_firing_equals_base_and_firing_differs(run_host, name, fast_path):
    """A strategy that never fires still runs the reference passes: no effect.

    Bit for bit where g is built by the method's own backward alone; on the fast
    path the method's retain gradient is added to g after a separate backward, so
    float addition order differs from the base run's single backward (≤ 1e-6).
    """
    base = run_host(f"trainer={name}", *method(name))
    never = run_host(
        f"trainer={name}",
        "+gru=default",
        "gru.strategy=cosclip",
        "+gru.strategy_args.c=0.0",
        f"gru.fast_path={fast_path}",
        *method(name),
    )
    assert len(never.gru_logs) == STEPS
    assert not any(entry["gru/fired"] for entry in never.gru_logs)
    if name == "GradAscent" or fast_path == "false":
        assert_same_weights(base, never)
    else:
        assert_close_weights(never, base, 1e-6)

    on = run_host(f"trainer={name}", "+gru=default", *method(name))
    if any(entry["gru/fired"] for entry in on.gru_logs):
        wb, wo = base.weights(), on.weights()
        assert any(not torch.equal(wb[k], wo[k]) for k in wb)


def test_gradient_ascent_fires(run_host):
    """GA's gradient opposes the retain gradient on a fresh model: GRU must act."""
    logs = run_host("trainer=GradAscent", "+gru=default").gru_logs
    assert any(entry["gru/fired"] for entry in logs)
