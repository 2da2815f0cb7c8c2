"""Resuming a host run restores GRU's state from the checkpoint folder.

The host's own resume is not bit-exact (its dataset draws each retain row with
``torch.randint`` while the dataloader prefetches past the saved RNG state), so this
compares the resumed run with one resumed from the same checkpoint minus GRU's
file; bit-exact resume is tested on a plain Trainer in tests/test_trainer.py.
"""

from __future__ import annotations

import shutil

import pytest
from host_runs import METHOD_OVERRIDES

from gru_plugin.engines.local import STATE_FILE

CHECKPOINTING = [
    "trainer.args.save_strategy=steps",
    "+trainer.args.save_steps=2",
    "trainer.args.save_only_model=false",
]


METHODS = ["GradDiff", "RMU"]


def checkpointed(method: str) -> tuple[str, ...]:
    return (
        f"trainer={method}",
        "+gru=default",
        *METHOD_OVERRIDES.get(method, []),
        *CHECKPOINTING,
    )


HOST_RUNS = [checkpointed(method) for method in METHODS]
"""The uninterrupted runs: they go through one host process."""


@pytest.mark.parametrize("method", METHODS)
def test_resume_restores_the_reference_ema(run_host, monkeypatch, tmp_path, method):
    # transformers 4.45 reads its rng_state.pth with torch>=2.6's weights-only load.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    common = checkpointed(method)
    full = run_host(*common)
    checkpoint = full.out / "checkpoint-2"
    assert (checkpoint / STATE_FILE).is_file()
    bare = tmp_path / "checkpoint-2"
    shutil.copytree(checkpoint, bare)
    (bare / STATE_FILE).unlink()

    # Both resumed runs in one host process.
    bare_run = (*common, f"+trainer.args.resume_from_checkpoint={bare}")
    resumed = run_host(
        *common, f"+trainer.args.resume_from_checkpoint={checkpoint}", batch=[bare_run]
    )
    restarted = run_host(*bare_run)
    # The resumed state's log history starts with the checkpoint's steps 1-2.
    assert [e["step"] for e in resumed.gru_logs] == [1, 2, 3]
    step3, step3_bare = resumed.gru_logs[-1], restarted.gru_logs[-1]
    assert "the reference EMA restarts from zero" in restarted.output
    assert "restarts from zero" not in resumed.output
    # Same batch, same weights: only r differs, by the restored (1-γ)·r₂ term.
    assert step3["gru/grad_norm"] == pytest.approx(step3_bare["gru/grad_norm"])
    assert step3["gru/ref_norm"] != pytest.approx(step3_bare["gru/ref_norm"])
