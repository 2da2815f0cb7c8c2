"""GRU on 2 CPU processes equals GRU on one process with the same global batches.

Under plain DDP (gloo) and DeepSpeed ZeRO-1, -2 and -3 (DeepSpeed's CPU accelerator).
"""

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
    # DeepSpeed on CPU; LOCAL_SIZE spares ZeRO-3 a call to the numactl binary.
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "LOCAL_SIZE": str(processes),
    }
    done = subprocess.run(
        [*launcher, str(WORKER), f"--out={out}", *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


PATHS = [
    ("GradDiff", True, (2, 1)),  # the method's retain backward reused
    ("GradAscent", False, (4, 2)),  # an extra reference pass, accumulated
]


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    """The 1-process run of each path, run once for all engines."""
    runs = {}

    def run(options: list[str], accumulation: int) -> tuple[dict, Path]:
        key = (*options, accumulation)
        if key not in runs:
            out = tmp_path_factory.mktemp("one")
            (record,) = run_worker(out, 1, f"--grad-accum={accumulation}", *options)
            runs[key] = record, out
        return runs[key]

    return run


@pytest.mark.parametrize("zero_stage", [None, 1, 2, 3], ids=lambda s: f"zero{s}")
@pytest.mark.parametrize("method, fast_path, accumulation", PATHS)
def test_two_ranks_equal_one_rank(
    tmp_path, one_rank, method, fast_path, accumulation, zero_stage
):
    one_gas, two_gas = accumulation
    options = [f"--method={method}", *([] if fast_path else ["--no-fast-path"])]
    single, single_out = one_rank(options, one_gas)
    engine = [] if zero_stage is None else [f"--zero-stage={zero_stage}"]
    ranks = run_worker(
        tmp_path / "two", 2, f"--grad-accum={two_gas}", *options, *engine
    )

    assert single["world_size"] == 1 and single["fast_path"] is fast_path
    expected = "MULTI_CPU" if zero_stage is None else "DEEPSPEED"
    assert [r["engine"] for r in ranks] == [expected, expected]
    assert [r["fast_path"] for r in ranks] == [fast_path, fast_path]
    # Every rank applies the very same coefficient at every step.
    assert ranks[0]["history"] == ranks[1]["history"]
    coefs_one = [step["coef"] for step in single["history"]]
    coefs_two = [step["coef"] for step in ranks[0]["history"]]
    assert any(step["fired"] for step in single["history"]), "no step tested GRU"
    assert coefs_two == pytest.approx(coefs_one, rel=1e-5, abs=1e-9)

    one = torch.load(single_out / "weights.pt")
    two = torch.load(tmp_path / "two" / "weights.pt")
    for name, weight in one.items():
        error = (two[name] - weight).norm() / weight.norm().clamp_min(1e-12)
        assert error <= 1e-5, name


def test_fsdp_is_refused(monkeypatch, tmp_path):
    from accelerate import Accelerator
    from test_trainer import make_trainer

    from gru_plugin.settings import GRUSettings

    engine = DistributedType.FSDP
    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda _: engine))
    with pytest.raises(ValueError, match="GRU does not support FSDP yet"):
        make_trainer(4, 1, 1, GRUSettings(), tmp_path)


def test_a_deepspeed_engine_without_zero_is_refused():
    from types import SimpleNamespace

    from gru_plugin.zero import ZeroGradients

    plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="zero_optimization.stage to 1, 2 or 3"):
        ZeroGradients(SimpleNamespace(optimizer=plain))
