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


def plus_gru(name: str, *settings: str) -> tuple[str, ...]:
    return (f"trainer={name}", "+gru=default", *settings, *method(name))


def base(name: str) -> tuple[str, ...]:
    return (f"trainer={name}", *method(name))


VARIANT = ("trainer=GradAscent_GRU",)
DISABLED = ["GradAscent", "RMU"]
NEVER_FIRING = [
    ("GradAscent", "true"),
    ("NPO", "false"),
    ("NPO", "true"),
    ("GradDiff", "true"),
]


def never_fires(name: str, fast_path: str) -> tuple[str, ...]:
    """A strategy that never fires: cos-clip at c = 0 (dot < c·‖g‖‖r‖ never)."""
    cosclip = ("gru.strategy=cosclip", "+gru.strategy_args.c=0.0")
    return plus_gru(name, *cosclip, f"gru.fast_path={fast_path}")


HOST_RUNS = [
    *(plus_gru(name) for name in [*METHODS, *OTHERS]),
    VARIANT,
    *(base(name) for name in ["GradAscent", "RMU", "NPO", "GradDiff"]),
    *(plus_gru(name, "gru.enabled=false") for name in DISABLED),
    *(never_fires(name, fast_path) for name, fast_path in NEVER_FIRING),
]
"""Every run of this module: they go through one host process."""


@pytest.mark.parametrize("name", list(METHODS))
def test_plus_gru(run_host, name):
    assert_gru_run(run_host(*plus_gru(name)))


def test_gru_variant_config_is_plus_gru(run_host):
    """``trainer=<M>_GRU`` is ``trainer=<M> +gru=default``: the same run, bit for
    bit. That each variant config composes so is checked in test_compose."""
    variant = run_host(*VARIANT)
    plus = run_host(*plus_gru("GradAscent"))
    assert_gru_run(variant)
    assert variant.gru_logs == plus.gru_logs
    assert_same_weights(variant, plus)


@pytest.mark.parametrize("name", OTHERS)
def test_other_registered_methods(run_host, name):
    assert_gru_run(run_host(*plus_gru(name)))


@pytest.mark.parametrize("name", DISABLED)
def test_disabled_equals_base(run_host, name):
    disabled = run_host(*plus_gru(name, "gru.enabled=false"))
    assert disabled.gru_logs == []
    assert_same_weights(run_host(*base(name)), disabled)


@pytest.mark.parametrize(("name", "fast_path"), NEVER_FIRING)
def test_never_firing_equals_base(run_host, name, fast_path):
    """A strategy that never fires still runs the reference passes: no effect.

    Bit for bit where g is built by the method's own backward alone; on the fast
    path the method's retain gradient is added to g after a separate backward, so
    float addition order differs from the base run's single backward (≤ 1e-6).
    """
    never = run_host(*never_fires(name, fast_path))
    assert len(never.gru_logs) == STEPS
    assert not any(entry["gru/fired"] for entry in never.gru_logs)
    if name == "GradAscent" or fast_path == "false":
        assert_same_weights(run_host(*base(name)), never)
    else:
        assert_close_weights(never, run_host(*base(name)), 1e-6)


def test_gradient_ascent_fires_and_moves_the_weights(run_host):
    """GA's gradient opposes the retain gradient on a fresh model: GRU must act,
    and what it does must reach the weights."""
    on = run_host(*plus_gru("GradAscent"))
    assert any(entry["gru/fired"] for entry in on.gru_logs)
    wb, wo = run_host(*base("GradAscent")).weights(), on.weights()
    assert any(not torch.equal(wb[k], wo[k]) for k in wb)
