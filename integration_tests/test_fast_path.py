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


@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_extra_pass(run_host, case):
    name = case.split("-")[0]
    common = [f"trainer={name}", "+gru=default", *METHOD_OVERRIDES.get(name, [])]
    fast = run_host(*common, *CASES[case])
    slow = run_host(*common, *CASES[case], "gru.fast_path=false")
    assert len(fast.gru_logs) == len(slow.gru_logs) == 3
    assert_close_weights(fast, slow, 1e-5)
    for a, b in zip(fast.gru_logs, slow.gru_logs, strict=True):
        assert a["gru/fired"] == b["gru/fired"]
        assert a["gru/coef"] == pytest.approx(b["gru/coef"], rel=1e-4, abs=1e-9)
    extra_pass = "extra reference forward+backward"
    assert extra_pass in slow.output
    assert (extra_pass in fast.output) == (name == "GradAscent")
