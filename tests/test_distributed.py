"""GRU on 2 processes equals GRU on one process with the same global batches.

Under plain DDP and DeepSpeed ZeRO-1, -2 and -3: on CPU by default (gloo, DeepSpeed's
CPU accelerator); ``GRU_TEST_DEVICE=cuda`` runs the same checks on GPUs (NCCL with
a GPU per process; on a single GPU both processes share it over gloo).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from accelerate.utils import DistributedType
from ddp_worker import launch, max_weight_difference

DEVICE = os.environ.get("GRU_TEST_DEVICE", "cpu")


def run_worker(out: Path, processes: int, *options: str) -> list[dict]:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.fail("GRU_TEST_DEVICE=cuda, but torch sees no GPU")
    return launch(out, processes, DEVICE, *options)


PATHS = [
    ("GradDiff", True, "all", (2, 1)),  # the method's retain backward reused
    ("GradAscent", False, "all", (4, 2)),  # an extra reference pass, accumulated
    ("GradDiff", True, "forget", (4, 2)),  # the retain term held back, accumulated
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
@pytest.mark.parametrize("method, fast_path, project, accumulation", PATHS)
def test_two_ranks_equal_one_rank(
    tmp_path, one_rank, method, fast_path, project, accumulation, zero_stage
):
    one_gas, two_gas = accumulation
    options = [f"--method={method}", f"--project={project}"]
    options += [] if fast_path else ["--no-fast-path"]
    single, single_out = one_rank(options, one_gas)
    engine = [] if zero_stage is None else [f"--zero-stage={zero_stage}"]
    ranks = run_worker(
        tmp_path / "two", 2, f"--grad-accum={two_gas}", *options, *engine
    )

    assert single["world_size"] == 1 and single["fast_path"] is fast_path
    expected = {"cpu": "MULTI_CPU", "cuda": "MULTI_GPU"}[DEVICE]
    expected = expected if zero_stage is None else "DEEPSPEED"
    assert [r["engine"] for r in ranks] == [expected, expected]
    assert [r["fast_path"] for r in ranks] == [fast_path, fast_path]
    # The reference EMA is as sharded as the engine's gradient: whole under DDP,
    # each rank's half (plus ZeRO-3's padding of odd sizes) under ZeRO-1/2/3.
    total = single["trainable_elements"]
    ema = [r["ema_elements"] for r in ranks]
    assert [r["held_elements"] for r in ranks] == (
        ema if project == "forget" else [0, 0]
    )
    if zero_stage is None:
        assert ema == [total, total]
    else:
        assert sum(ema) >= total and max(ema) <= total // 2 + 64
    # Every rank applies the very same coefficient at every step.
    assert ranks[0]["history"] == ranks[1]["history"]
    coefs_one = [step["coef"] for step in single["history"]]
    coefs_two = [step["coef"] for step in ranks[0]["history"]]
    assert any(step["fired"] for step in single["history"]), "no step tested GRU"
    assert coefs_two == pytest.approx(coefs_one, rel=1e-5, abs=1e-9)

    assert max_weight_difference(single_out, tmp_path / "two") <= 1e-5


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

    from gru_plugin.engines.zero import ZeroGradients

    plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    engine = SimpleNamespace(optimizer=plain)
    wrapper = SimpleNamespace(engine=engine)
    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(deepspeed_engine_wrapped=wrapper)
    )
    with pytest.raises(ValueError, match="zero_optimization.stage to 1, 2 or 3"):
        ZeroGradients(trainer)


def test_zero3_resume_restores_each_ranks_ema_shard(tmp_path):
    """Resumed at step 2 of 4 under ZeRO-3 == uninterrupted, bit for bit."""
    options = ["--zero-stage=3", "--grad-accum=2", "--method=GradAscent"]
    options.append("--no-fast-path")
    whole = run_worker(tmp_path / "whole", 2, *options, "--save-steps=2")
    checkpoint = tmp_path / "whole" / "trainer" / "checkpoint-2"
    shards = sorted(path.name for path in checkpoint.glob("gru_state*"))
    assert shards == ["gru_state.rank0.safetensors", "gru_state.rank1.safetensors"]

    resumed = run_worker(
        tmp_path / "resumed", 2, *options, f"--resume-from={checkpoint}"
    )
    assert resumed[0]["history"] == whole[0]["history"][2:]
    one = torch.load(tmp_path / "whole" / "weights.pt", map_location="cpu")
    two = torch.load(tmp_path / "resumed" / "weights.pt", map_location="cpu")
    assert all(torch.equal(one[name], two[name]) for name in one)

    for shard in checkpoint.glob("gru_state*"):
        shard.unlink()  # without GRU's state the EMA restarts from zero
    restarted = run_worker(
        tmp_path / "restarted", 2, *options, f"--resume-from={checkpoint}"
    )
    assert restarted[0]["history"] != whole[0]["history"][2:]
