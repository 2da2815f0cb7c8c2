"""The host's own multi-GPU recipe with ``+gru``: ``accelerate launch`` with its
``configs/accelerate`` DeepSpeed ZeRO-3 config (bf16), 2 CPU processes; and the same
config with the optimizer offloaded to the CPU, as its users set it
(``offload_optimizer.device: cpu``; the host ships ``none``).

Exactness against one process is tested on a toy trainer in tests/test_distributed.py
(the host draws each rank's retain rows at random). Here: the host's trainers train
under the host's own config, GRU acts at every step, and the engine steps on the
rectified gradient: the norm DeepSpeed measures before clipping is the norm GRU
left, not the one it found.
"""

from __future__ import annotations

import json
import math

import pytest
from host_runs import GRU_UNLEARN, HOST, two_rank_gru_logs

from gru_plugin.testing import deepspeed_shm_cleanup

ACCELERATE_CONFIG = """\
compute_environment: LOCAL_MACHINE
deepspeed_config:
  deepspeed_config_file: {deepspeed_config}
  zero3_init_flag: true
distributed_type: DEEPSPEED
machine_rank: 0
num_machines: 1
num_processes: 2
use_cpu: false
"""

LAUNCHER = """
import os
import sys
from accelerate.commands.accelerate_cli import main

# DeepSpeed on CPU; LOCAL_SIZE spares ZeRO-3 a call to the numactl binary.
os.environ.update(DS_ACCELERATOR="cpu", LOCAL_SIZE="2", OMP_NUM_THREADS="1")
run = ["accelerate", "launch", "--config_file", {config!r}, {gru_unlearn!r}]
sys.argv = [*run, *sys.argv[1:]]
main()
"""

# The host's DeepSpeed config trains in bf16; the CPU overrides chose fp32.
BF16 = ["trainer.args.bf16=true", "model.model_args.torch_dtype=bfloat16"]

# Each rank's 20 rows of forget01 in 5-row micro-batches: 2 whole windows an epoch.
# Under accelerate 0.34 the engine counts micro-steps itself and, on transformers
# >= 4.46, skips the Trainer's epoch-end partial window (docs/host-versions.md);
# whole windows keep the two in step on both hosts.
BATCH = 5


HOST_DEEPSPEED_CONFIG = HOST / "configs/accelerate/zero_stage3_offload_config.json"


@pytest.fixture(scope="module")
def deepspeed_launchers(tmp_path_factory):
    """A launcher for the host's DeepSpeed config as it is, and one with the
    optimizer offloaded to the CPU (the Trainer's optimizer kept: DeepSpeed's own
    CPU Adam would be compiled first)."""
    folder = tmp_path_factory.mktemp("deepspeed")
    offloaded = json.loads(HOST_DEEPSPEED_CONFIG.read_text())
    offloaded["zero_optimization"]["offload_optimizer"]["device"] = "cpu"
    offloaded["zero_force_ds_cpu_optimizer"] = False
    (folder / "offloaded.json").write_text(json.dumps(offloaded))
    launchers = {}
    for offload, deepspeed_config in (
        (False, HOST_DEEPSPEED_CONFIG),
        (True, folder / "offloaded.json"),
    ):
        config = folder / f"accelerate-{offload}.yaml"
        config.write_text(ACCELERATE_CONFIG.format(deepspeed_config=deepspeed_config))
        launcher = folder / f"launch-{offload}.py"
        launcher.write_text(
            LAUNCHER.format(config=str(config), gru_unlearn=GRU_UNLEARN)
        )
        launchers[offload] = launcher
    with deepspeed_shm_cleanup():
        yield launchers


@pytest.mark.parametrize(
    "method, settings, offload",
    [
        ("GradDiff", [], False),  # the fast path: its own retain backward reused
        ("NPO", ["gru.fast_path=false"], False),  # an extra reference pass
        ("GradAscent", [], True),  # offloaded; an extra reference pass; GRU fires
    ],
)
def test_host_method_with_gru_under_deepspeed_zero3(
    run_host, deepspeed_launchers, method, settings, offload
):
    run = run_host(
        f"trainer={method}",
        "+gru=default",
        *settings,
        *BF16,
        f"trainer.args.per_device_train_batch_size={BATCH}",
        launcher=deepspeed_launchers[offload],
    )
    assert "GRU rectifies each rank's DeepSpeed ZeRO-3 gradient partition" in run.output
    assert ("(the optimizer offloaded to the CPU)" in run.output) is offload
    logs = two_rank_gru_logs(run, BATCH)
    for entry in logs:
        assert entry["gru/ref_norm"] > 0
        coef, dot = entry["gru/coef"], entry["gru/dot"]
        norm_sq = entry["gru/grad_norm"] ** 2
        after = math.sqrt(
            norm_sq - 2 * coef * dot + coef**2 * entry["gru/ref_norm"] ** 2
        )
        assert entry["grad_norm"] == pytest.approx(after, rel=1e-3)
        if entry["gru/fired"]:
            assert entry["gru/cos_after"] >= -1e-3
            assert after < entry["gru/grad_norm"]
    if method == "GradAscent":
        assert any(entry["gru/fired"] for entry in logs), "GRU never acted"
