"""Reusing the method's own retain backward equals the extra-pass path."""

from __future__ import annotations

import pytest
from host_runs import METHOD_OVERRIDES, assert_close_weights

CASES = {
    "GradAscent": [],
    "GradDiff": [],
    "NPO": [],
    "SimNPO": [],
    "RMU-NLL": ["trainer.method_args.retain_loss_type=NLL"],
    "RMU-host": ["gru.reference=host"],
}


def fast_and_slow(case: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The case's runs on the fast path and with the extra reference pass."""
    name = case.split("-")[0]
    common = (f"trainer={name}", "+gru=default", *METHOD_OVERRIDES.get(name, []))
    fast = (*common, *CASES[case])
    return fast, (*fast, "gru.fast_path=false")


HOST_RUNS = [run for case in CASES for run in fast_and_slow(case)]
"""Every run of this module: they go through one host process."""


@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_extra_pass(run_host, case):
    name = case.split("-")[0]
    fast_run, slow_run = fast_and_slow(case)
    fast, slow = run_host(*fast_run), run_host(*slow_run)
    assert len(fast.gru_logs) == len(slow.gru_logs) == 3
    assert_close_weights(fast, slow, 1e-5)
    for a, b in zip(fast.gru_logs, slow.gru_logs, strict=True):
        assert a["gru/fired"] == b["gru/fired"]
        assert a["gru/coef"] == pytest.approx(b["gru/coef"], rel=1e-4, abs=1e-9)
    extra_pass = "extra reference forward+backward"
    assert extra_pass in slow.output
    assert (extra_pass in fast.output) == (name == "GradAscent")
