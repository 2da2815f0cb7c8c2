"""GRU under DDP (gloo, 2 CPU processes) equals GRU on one process, same batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.utils import DistributedType

WORKER = Path(__file__).with_name("ddp_worker.py")


def run_worker(out: Path, processes: int, *options: str) -> list[dict]:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launcher, str(WORKER), f"--out={out}", *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


@pytest.mark.parametrize(
    "method, fast_path, accumulation",
    [
        ("GradDiff", True, (2, 1)),  # the method's retain backward reused
        ("GradAscent", False, (4, 2)),  # an extra reference pass, accumulated
    ],
)
def test_two_ranks_equal_one_rank(tmp_path, method, fast_path, accumulation):
    one_gas, two_gas = accumulation
    options = [f"--method={method}", *([] if fast_path else ["--no-fast-path"])]
    (single,) = run_worker(tmp_path / "one", 1, f"--grad-accum={one_gas}", *options)
    ranks = run_worker(tmp_path / "two", 2, f"--grad-accum={two_gas}", *options)

    assert single["world_size"] == 1 and single["fast_path"] is fast_path
    assert [r["engine"] for r in ranks] == ["MULTI_CPU", "MULTI_CPU"]
    # Every rank applies the very same coefficient at every step.
    assert ranks[0]["history"] == ranks[1]["history"]
    coefs_one = [step["coef"] for step in single["history"]]
    coefs_two = [step["coef"] for step in ranks[0]["history"]]
    assert any(step["fired"] for step in single["history"]), "no step tested GRU"
    assert coefs_two == pytest.approx(coefs_one, rel=1e-5, abs=1e-9)

    one = torch.load(tmp_path / "one" / "weights.pt")
    two = torch.load(tmp_path / "two" / "weights.pt")
    for name, weight in one.items():
        error = (two[name] - weight).norm() / weight.norm().clamp_min(1e-12)
        assert error <= 1e-5, name


@pytest.mark.parametrize("engine", [DistributedType.DEEPSPEED, DistributedType.FSDP])
def test_engines_that_hide_gradients_are_refused(monkeypatch, tmp_path, engine):
    from accelerate import Accelerator
    from test_trainer import make_trainer

    from gru_plugin.settings import GRUSettings

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda _: engine))
    with pytest.raises(ValueError, match=f"GRU does not support {engine.value}"):
        make_trainer(4, 1, 1, GRUSettings(), tmp_path)
