"""GRU on 2 processes equals GRU on one process with the same global batches.

Under plain DDP, DeepSpeed ZeRO-1, -2 and -3 (and ZeRO-1/2 with the optimizer
offloaded) and FSDP2 (where accelerate has it): on CPU by default (gloo, DeepSpeed's
CPU accelerator); ``GRU_TEST_DEVICE=cuda`` runs the same checks on GPUs (NCCL with
a GPU per process; on a single GPU both processes share it over gloo).
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from ddp_worker import ENGINES, launch, max_weight_difference, why_not
from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

from gru_plugin.engines.zero import offload_is_reworked

DEVICE = os.environ.get("GRU_TEST_DEVICE", "cpu")
PATHS = [
    ("GradDiff", True, "all", (2, 1)),  # the method's retain backward reused
    ("GradAscent", False, "all", (4, 2)),  # an extra reference pass, accumulated
    ("GradDiff", True, "forget", (4, 2)),  # the retain term held back, accumulated
]
RUN_ENGINES = {
    engine: flags for engine, flags in ENGINES.items() if not why_not(engine, DEVICE)
}
"""Offload needs DeepSpeed 0.15 (GRU refuses later ones: tested below), FSDP2
accelerate >= 1.6 (the transformers 5 job; the hosts pin 0.34.2)."""
RESUMED = {
    engine: ["--grad-accum=2", "--method=GradAscent", "--no-fast-path", *flags]
    for engine, flags in RUN_ENGINES.items()
    if engine in ("ZeRO-3", "ZeRO-2-offload", "ZeRO-3-offload", "FSDP2")
}
"""With the extra reference pass, checkpointed at step 2 of 4: each rank's EMA."""


def launch_runs(processes: int, runs: dict) -> dict:
    """``runs`` (name: (out, options)) in one launch; name: (rank records, out)."""
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.fail("GRU_TEST_DEVICE=cuda, but torch sees no GPU")
    records = launch(processes, DEVICE, runs)
    return {name: (records[name], out) for name, (out, _) in runs.items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """Every uninterrupted run of this module, in one launch of 1 process and one
    of 2: starting the processes costs far more than the runs."""
    root = tmp_path_factory.mktemp("runs")
    one, two = {}, {}
    for method, fast_path, project, (one_gas, two_gas) in PATHS:
        path = f"{method}-{fast_path}-{project}"
        options = [f"--method={method}", f"--project={project}"]
        options += [] if fast_path else ["--no-fast-path"]
        one[path] = root / f"one-{path}", [f"--grad-accum={one_gas}", *options]
        for engine, flags in RUN_ENGINES.items():
            run = [f"--grad-accum={two_gas}", *options, *flags]
            two[path, engine] = root / f"two-{path}-{engine}", run
    for engine, options in RESUMED.items():
        run = [*options, "--save-steps=2"]
        two["checkpointed", engine] = root / f"checkpointed-{engine}", run
    return launch_runs(1, one) | launch_runs(2, two)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("method, fast_path, project, accumulation", PATHS)
def test_two_ranks_equal_one_rank(
    uninterrupted, method, fast_path, project, accumulation, engine
):
    if engine not in RUN_ENGINES:
        pytest.skip(why_not(engine, DEVICE))
    path = f"{method}-{fast_path}-{project}"
    (single,), single_out = uninterrupted[path]
    ranks, out = uninterrupted[path, engine]

    assert single["world_size"] == 1 and single["fast_path"] is fast_path
    expected = {"cpu": "MULTI_CPU", "cuda": "MULTI_GPU"}[DEVICE]
    expected = {"DDP": expected, "FSDP2": "FSDP"}.get(engine, "DEEPSPEED")
    assert [r["engine"] for r in ranks] == [expected, expected]
    offload = engine.endswith("offload")
    assert [r["offload"] for r in ranks] == [offload, offload]
    assert [r["fast_path"] for r in ranks] == [fast_path, fast_path]
    # The reference EMA is as sharded as the engine's gradient: whole under DDP,
    # each rank's half (plus ZeRO-3's padding of odd sizes) under ZeRO and FSDP2.
    total = single["trainable_elements"]
    ema = [r["ema_elements"] for r in ranks]
    assert [r["held_elements"] for r in ranks] == (
        ema if project == "forget" else [0, 0]
    )
    if engine == "DDP":
        assert ema == [total, total]
    else:
        assert sum(ema) >= total and max(ema) <= total // 2 + 64
    # Every rank applies the very same coefficient at every step.
    assert ranks[0]["history"] == ranks[1]["history"]
    coefs_one = [step["coef"] for step in single["history"]]
    coefs_two = [step["coef"] for step in ranks[0]["history"]]
    assert any(step["fired"] for step in single["history"]), "no step tested GRU"
    assert coefs_two == pytest.approx(coefs_one, rel=1e-5, abs=1e-9)

    assert max_weight_difference(single_out, out) <= 1e-5


def test_fsdp1_is_refused(monkeypatch, tmp_path):
    from test_trainer import make_trainer

    from gru_plugin.settings import GRUSettings

    engine = DistributedType.FSDP
    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda _: engine))
    monkeypatch.setattr(Accelerator, "is_fsdp2", False, raising=False)
    with pytest.raises(ValueError, match="FSDP1 flattens .* use FSDP2"):
        make_trainer(4, 1, 1, GRUSettings(), tmp_path)


def zero_gradients_for(optimizer):
    """GRU's ZeRO engine on a stand-in trainer whose DeepSpeed runs ``optimizer``."""
    from types import SimpleNamespace

    from gru_plugin.engines.zero import ZeroGradients

    wrapper = SimpleNamespace(engine=SimpleNamespace(optimizer=optimizer))
    accelerator = SimpleNamespace(deepspeed_engine_wrapped=wrapper)
    return ZeroGradients(SimpleNamespace(accelerator=accelerator))


def test_a_deepspeed_engine_without_zero_is_refused():
    plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="zero_optimization.stage to 1, 2 or 3"):
        zero_gradients_for(plain)


@pytest.mark.skipif(
    not offload_is_reworked(DeepSpeedZeroOptimizer),
    reason="this DeepSpeed's offload is mapped",
)
@pytest.mark.parametrize("stage", ["1/2", "3"])
def test_offload_on_a_reworked_deepspeed_is_refused(stage):
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

    if stage == "3":
        optimizer = object.__new__(DeepSpeedZeroOptimizer_Stage3)
        optimizer.fp16_groups, optimizer.offload_optimizer = [], True
    else:
        optimizer = object.__new__(DeepSpeedZeroOptimizer)
        optimizer.bit16_groups, optimizer.cpu_offload = [], True
    with pytest.raises(ValueError, match="pip install deepspeed==0.15.4"):
        zero_gradients_for(optimizer)


def test_optimizer_offload_to_nvme_is_refused():
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

    optimizer = object.__new__(DeepSpeedZeroOptimizer_Stage3)
    optimizer.fp16_groups, optimizer.offload_optimizer = [], True
    optimizer.swap_optimizer = True
    with pytest.raises(ValueError, match="offload_optimizer.device: nvme"):
        zero_gradients_for(optimizer)


@pytest.fixture(scope="module")
def resumed(uninterrupted, tmp_path_factory) -> dict:
    """Each checkpointed run resumed from step 2, with and without GRU's state."""
    root = tmp_path_factory.mktemp("resumed")
    runs = {}
    for engine, options in RESUMED.items():
        _, out = uninterrupted["checkpointed", engine]
        checkpoint = out / "trainer" / "checkpoint-2"
        stateless = root / f"stateless-{engine}"  # without GRU's state: r = 0
        shutil.copytree(checkpoint, stateless, ignore=shutil.ignore_patterns("gru*"))
        for state, folder in (("with", checkpoint), ("without", stateless)):
            runs[engine, state] = (
                root / f"{engine}-{state}",
                [
                    *options,
                    f"--resume-from={folder}",
                ],
            )
    return launch_runs(2, runs)


@pytest.mark.parametrize("engine", RESUMED)
def test_resume_restores_each_ranks_ema_shard(uninterrupted, resumed, engine):
    """Resumed at step 2 of 4 == uninterrupted, bit for bit."""
    (whole, *_), whole_out = uninterrupted["checkpointed", engine]
    checkpoint = whole_out / "trainer" / "checkpoint-2"
    shards = sorted(path.name for path in checkpoint.glob("gru_state*"))
    assert shards == ["gru_state.rank0.safetensors", "gru_state.rank1.safetensors"]

    (again, *_), again_out = resumed[engine, "with"]
    assert again["history"] == whole["history"][2:]
    one = torch.load(whole_out / "weights.pt", map_location="cpu")
    two = torch.load(again_out / "weights.pt", map_location="cpu")
    assert all(torch.equal(one[name], two[name]) for name in one)
    (restarted, *_), _ = resumed[engine, "without"]
    assert restarted["history"] != whole["history"][2:]
