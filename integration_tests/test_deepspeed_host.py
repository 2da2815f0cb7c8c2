"""The host's own multi-GPU recipe with ``+gru``: ``accelerate launch`` with its
``configs/accelerate`` DeepSpeed ZeRO-3 config (bf16), 2 CPU processes.

Exactness against one process is tested on a toy trainer in tests/test_distributed.py
(the host draws each rank's retain rows at random). Here: the host's trainers train
under the host's own config, GRU acts at every step, and the engine steps on the
rectified gradient: the norm DeepSpeed measures before clipping is the norm GRU
left, not the one it found.
"""

from __future__ import annotations

import math

import pytest
from host_runs import GRU_UNLEARN, HOST, two_rank_gru_logs

from gru_plugin.testing import deepspeed_shm_cleanup

ACCELERATE_CONFIG = """\
compute_environment: LOCAL_MACHINE
deepspeed_config:
  deepspeed_config_file: {host}/configs/accelerate/zero_stage3_offload_config.json
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


@pytest.fixture(scope="module")
def deepspeed_launcher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deepspeed")
    config = folder / "accelerate.yaml"
    config.write_text(ACCELERATE_CONFIG.format(host=HOST))
    launcher = folder / "launch.py"
    launcher.write_text(LAUNCHER.format(config=str(config), gru_unlearn=GRU_UNLEARN))
    with deepspeed_shm_cleanup():
        yield launcher


@pytest.mark.parametrize(
    "method, settings",
    [
        ("GradDiff", []),  # the fast path: its own retain backward reused
        ("GradAscent", []),  # an extra reference pass; GRU fires
        ("NPO", ["gru.fast_path=false"]),
    ],
)
def test_host_method_with_gru_under_deepspeed_zero3(
    run_host, deepspeed_launcher, method, settings
):
    run = run_host(
        f"trainer={method}",
        "+gru=default",
        *settings,
        *BF16,
        f"trainer.args.per_device_train_batch_size={BATCH}",
        launcher=deepspeed_launcher,
    )
    assert "DeepSpeed" in run.output
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
