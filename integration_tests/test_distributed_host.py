"""The host's trainers with ``+gru`` on 2 CPU ranks make the same steps as on one:
DDP (torchrun), DeepSpeed ZeRO-3 (``accelerate launch`` with the host's own
``configs/accelerate`` config, the optimizer offloaded to the CPU as its users set
it) and FSDP2 (where accelerate has it: >= 1.6, host #191).

One rank accumulates 2 rows a step, 2 ranks take 1 row each: the same global
batches (the host's retain rows paired by index, ``paired_rank.py``). fp32
throughout: transformers 5 refuses bf16 on CPU, and the comparison wants it.
Clipping is measured but never active (``max_grad_norm=1e9``): host main's
transformers 4.51 leaves the loss undivided by the accumulation steps, so one
rank's g is twice the two ranks'; GRU's decisions do not depend on that scale.
Exactness on every path, resume included, is tested on a toy trainer in
tests/test_distributed.py.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import accelerate
import pytest
from host_runs import HOST
from packaging.version import Version

from gru_plugin.testing import deepspeed_shm_cleanup

PAIRED_RANK = Path(__file__).with_name("paired_rank.py")
COMMON = [
    "trainer.args.per_device_train_batch_size=1",
    "+trainer.args.max_grad_norm=1e9",
]
ONE_RANK = [*COMMON, "trainer.args.gradient_accumulation_steps=2"]
TWO_RANKS = [*COMMON, "trainer.args.gradient_accumulation_steps=1"]
DDP = [
    # accelerate >= 1.13 distributes a GPU-less rank only with cpu=True.
    "+trainer.args.use_cpu=true",
    # The host's trainer config sets the string "None", which DDP rejects.
    "trainer.args.ddp_find_unused_parameters=false",
]
FSDP2_CONFIG = {
    "version": 2,
    "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
    "state_dict_type": "SHARDED_STATE_DICT",
}

TORCHRUN = """
import os, sys
from torch.distributed.run import main

os.environ.update({env!r})
main(["--standalone", "--nproc_per_node=2", {rank!r}, *sys.argv[1:]])
"""

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

ACCELERATE_LAUNCH = """
import os, sys

# DeepSpeed on CPU; LOCAL_SIZE spares ZeRO-3 a call to the numactl binary.
os.environ.update(DS_ACCELERATOR="cpu", LOCAL_SIZE="2", OMP_NUM_THREADS="1")
overlay = {overlay!r}
if overlay:  # an accelerate that still runs DeepSpeed on CPU ranks, for every rank
    sys.path.insert(0, overlay)
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([overlay, path])
import socket
from accelerate.commands.accelerate_cli import main

with socket.socket() as free:  # not accelerate's fixed default: another job may run
    free.bind(("127.0.0.1", 0))
    port = str(free.getsockname()[1])
launch = ["accelerate", "launch", "--main_process_port", port]
launch += ["--config_file", {config!r}, {rank!r}]
sys.argv = [*launch, *sys.argv[1:]]
main()
"""

ACCELERATE_FOR_DEEPSPEED = Path(sys.prefix) / "accelerate-deepspeed-cpu"
"""accelerate 1.12.0 beside a newer one (``.ci/install host-pr191``): from 1.13 a
GPU-less rank is distributed only with cpu=True (accelerate/state.py:805,
``PartialState._prepare_backend``), which turns DeepSpeed off (state.py:975,
``AcceleratorState.__init__``)."""


def deepspeed_overlay() -> str | None:
    """The accelerate DeepSpeed runs need on CPU: this one, or the one beside it."""
    if Version(accelerate.__version__) < Version("1.13"):
        return None
    if not (ACCELERATE_FOR_DEEPSPEED / "accelerate").is_dir():
        pytest.skip(
            f"accelerate {accelerate.__version__} runs DeepSpeed on no CPU rank and "
            f"no accelerate 1.12 is at {ACCELERATE_FOR_DEEPSPEED}: make this venv "
            "with '.ci/install host-pr191'"
        )
    return str(ACCELERATE_FOR_DEEPSPEED)


@pytest.fixture(scope="module")
def launch_folder(tmp_path_factory):
    """The engines' configs: FSDP2's, and the host's ZeRO-3 config in fp32, as it
    is and with the optimizer offloaded to the CPU (the Trainer's optimizer kept:
    DeepSpeed's own CPU Adam would be compiled first)."""
    folder = tmp_path_factory.mktemp("launchers")
    (folder / "FSDP2.json").write_text(json.dumps(FSDP2_CONFIG))
    host_config = HOST / "configs/accelerate/zero_stage3_offload_config.json"
    fp32 = json.loads(host_config.read_text())
    fp32["bf16"]["enabled"] = False
    (folder / "ZeRO-3.json").write_text(json.dumps(fp32))
    fp32["zero_optimization"]["offload_optimizer"]["device"] = "cpu"
    fp32["zero_force_ds_cpu_optimizer"] = False
    (folder / "ZeRO-3-offload.json").write_text(json.dumps(fp32))
    with deepspeed_shm_cleanup():
        yield folder


def launcher_for(engine: str, folder: Path) -> tuple[Path, list[str]]:
    """The launcher of 2 ranks under ``engine``, and the overrides that choose it."""
    launcher = folder / f"{engine}.py"
    if engine in ("DDP", "FSDP2"):
        env = {"OMP_NUM_THREADS": "1"}
        overrides = DDP
        if engine == "FSDP2":
            env["GRU_TEST_FSDP_ON_CPU"] = "1"
            fsdp_config = folder / "FSDP2.json"
            overrides = [
                *DDP,
                "+trainer.args.fsdp=full_shard",
                f"+trainer.args.fsdp_config={fsdp_config}",
                # Each rank saves its shards: FSDP refuses save_only_model then.
                "trainer.args.save_only_model=false",
            ]
        launcher.write_text(TORCHRUN.format(env=env, rank=str(PAIRED_RANK)))
        return launcher, overrides
    config = folder / f"{engine}.yaml"
    config.write_text(
        ACCELERATE_CONFIG.format(deepspeed_config=folder / f"{engine}.json")
    )
    launcher.write_text(
        ACCELERATE_LAUNCH.format(
            overlay=deepspeed_overlay(), config=str(config), rank=str(PAIRED_RANK)
        )
    )
    return launcher, []


ENGINE_LINES = {
    "DDP": "GRU rectifies param.grad (one process, or DDP)",
    "ZeRO-3": "GRU rectifies each rank's DeepSpeed ZeRO-3 gradient partition",
    "ZeRO-3-offload": "ZeRO-3 gradient partition (the optimizer offloaded to the CPU)",
    "FSDP2": "GRU rectifies each rank's shard of FSDP2's DTensor gradients",
}
CASES = [
    ("DDP", "GradDiff"),
    ("DDP", "NPO"),
    ("ZeRO-3", "GradDiff"),
    ("ZeRO-3-offload", "NPO"),
    ("FSDP2", "GradDiff"),
    ("FSDP2", "NPO"),
]


def rectified_norm(entry: dict) -> float:
    """‖g − coef·r‖ from GRU's logged statistics."""
    coef, dot = entry["gru/coef"], entry["gru/dot"]
    norm_sq = entry["gru/grad_norm"] ** 2
    return math.sqrt(norm_sq - 2 * coef * dot + coef**2 * entry["gru/ref_norm"] ** 2)


@pytest.mark.parametrize(("engine", "method"), CASES)
def test_two_ranks_make_the_steps_of_one(run_host, launch_folder, engine, method):
    if engine == "FSDP2" and not hasattr(accelerate.Accelerator, "is_fsdp2"):
        pytest.skip(f"accelerate {accelerate.__version__} has no FSDP2 (>= 1.6 has)")
    launcher, engine_overrides = launcher_for(engine, launch_folder)
    gru = [f"trainer={method}", "+gru=default"]
    one = run_host(*gru, *ONE_RANK, launcher=PAIRED_RANK).gru_logs
    run = run_host(*gru, *TWO_RANKS, *engine_overrides, launcher=launcher)
    assert ENGINE_LINES[engine] in run.output
    two = run.gru_logs
    print(f"{engine} {method} per-step gru/cos, 1 rank vs 2:")
    for a, b in zip(one, two, strict=True):
        print(f"  step {a['step']}: {a['gru/cos']:+.6f} {b['gru/cos']:+.6f}")
    assert [entry["step"] for entry in two] == [entry["step"] for entry in one]
    assert [e["gru/fired"] for e in two] == [e["gru/fired"] for e in one]
    for a, b in zip(one, two, strict=True):
        assert b["gru/cos"] == pytest.approx(a["gru/cos"], abs=1e-4)
        assert b["gru/ref_norm"] > 0
        # The engine steps on the rectified gradient: the norm it measures before
        # clipping is the norm GRU left, not the one it found.
        assert b["grad_norm"] == pytest.approx(rectified_norm(b), rel=1e-3)
        if b["gru/fired"]:
            assert b["gru/cos_after"] >= -1e-4
