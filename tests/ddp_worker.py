"""Runs of the toy GRU trainer, on one process or as ranks under ``torchrun``.

    python tests/ddp_worker.py RUNS.json
    torchrun --nproc_per_node 2 tests/ddp_worker.py RUNS.json
    DS_ACCELERATOR=cpu LOCAL_SIZE=2 torchrun --nproc_per_node 2 \
        tests/ddp_worker.py RUNS.json

RUNS.json lists runs, each the options of one (``["--out=DIR", "--grad-accum=2",
"--zero-stage=3"]``). ``launch`` writes it and starts the processes, with the
environment each device needs. The runs of a launch go one after another in the
same processes: starting them (torch, transformers, DeepSpeed) costs far more than
the four toy steps of a run.

All runs see the same global batches: the sampler is sequential and accelerate hands
consecutive per-device batches to consecutive ranks. Each rank writes the GRU
statistics of every step to ``rank<N>.json`` in the run's ``--out``; rank 0 writes
``weights.pt``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from transformers import TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trainer import (
    TOY_ARGS,
    ForgetRetain,
    GradDiff,
    GradientAscent,
    collate,
    tiny_model,
)

from gru_plugin.engines.zero import is_offloaded
from gru_plugin.settings import GRUSettings
from gru_plugin.testing import (
    deepspeed_shm_cleanup,
    forget_engine_state,
    run_processes,
)
from gru_plugin.trainer import gru_trainer_class

BASES = {"GradAscent": GradientAscent, "GradDiff": GradDiff}
ENGINES = {
    "DDP": [],
    **{f"ZeRO-{s}": [f"--zero-stage={s}"] for s in (1, 2, 3)},
    # The optimizer offloaded to the CPU: GRU works on DeepSpeed's fp32 partition.
    **{f"ZeRO-{s}-offload": [f"--zero-stage={s}", "--offload"] for s in (1, 2, 3)},
    "FSDP2": ["--fsdp2"],
}
"""The engines a run can ask for, by name: this worker's options for each."""


ACCELERATE_1_13_NO_DEEPSPEED_ON_CPU = (
    "accelerate >= 1.13 runs DeepSpeed on no CPU rank: it distributes a GPU-less "
    "rank only with cpu=True (accelerate/state.py:805, PartialState._prepare_backend)"
    " and turns DeepSpeed on only without it (state.py:975, AcceleratorState."
    "__init__); accelerate 1.12 is the newest that runs it"
)


def why_not(engine: str, device: str = "cpu") -> str | None:
    """Why this environment cannot run ``engine`` on 2 ranks (None: it can)."""
    flags = ENGINES[engine]
    if device == "cpu" and "--zero-stage" in " ".join(flags):
        import accelerate
        from packaging.version import Version

        if Version(accelerate.__version__) >= Version("1.13"):
            return ACCELERATE_1_13_NO_DEEPSPEED_ON_CPU
    if "--offload" in flags:
        import deepspeed
        from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
        from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

        from gru_plugin.engines.zero import offload_is_reworked

        stage3 = "--zero-stage=3" in flags
        zero = DeepSpeedZeroOptimizer_Stage3 if stage3 else DeepSpeedZeroOptimizer
        if offload_is_reworked(zero):  # GRU refuses it (tested)
            return f"DeepSpeed {deepspeed.__version__}: offload refused"
    if "--fsdp2" in flags:
        import accelerate

        if not hasattr(accelerate.Accelerator, "is_fsdp2"):
            return f"accelerate {accelerate.__version__} has no FSDP2 (>= 1.6 has)"
        if device == "cuda" and torch.cuda.device_count() < 2:
            return "FSDP2 with 2 ranks needs 2 GPUs here (NCCL)"
    return None


Run = tuple[Path, Sequence[str]]
"""One run: its output folder and its options (all but ``--out``)."""
K = TypeVar("K")


def launch(processes: int, device: str, runs: Mapping[K, Run]) -> dict[K, list[dict]]:
    """Run ``runs`` in turn on ``processes`` processes; by name, each run's records
    (one per rank)."""
    options = [
        [f"--out={out}", f"--device={device}", *opts] for out, opts in runs.values()
    ]
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={processes}"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        # DeepSpeed 0.15's checkpoints hold pickled enums: torch >= 2.6 refuses them.
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
    }
    if device == "cpu":
        # DeepSpeed on CPU; LOCAL_SIZE spares ZeRO-3 a call to the numactl binary.
        env |= {"DS_ACCELERATOR": "cpu", "LOCAL_SIZE": str(processes)}
    with tempfile.TemporaryDirectory() as folder, deepspeed_shm_cleanup():
        runs_file = Path(folder) / "runs.json"
        runs_file.write_text(json.dumps(options))
        command = [*launcher, __file__, str(runs_file)]
        done = run_processes(command, env=env, timeout=120 + 60 * len(runs))
    if done.returncode != 0:
        raise RuntimeError(f"worker failed:\n{done.stderr[-3000:]}")
    return {
        name: [
            json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)
        ]
        for name, (out, _) in runs.items()
    }


def max_weight_difference(one: Path, two: Path) -> float:
    """The largest relative L2 difference of a final weight between two runs."""
    weights_one = torch.load(one / "weights.pt", map_location="cpu")
    weights_two = torch.load(two / "weights.pt", map_location="cpu")
    return max(
        ((weights_two[name] - weight).norm() / weight.norm().clamp_min(1e-12)).item()
        for name, weight in weights_one.items()
    )


def main() -> None:
    parser = run_options()
    for options in json.loads(Path(sys.argv[1]).read_text()):
        train(parser.parse_args(options))
        forget_engine_state()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="a run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grad-accum", type=int, required=True)
    parser.add_argument("--method", choices=sorted(BASES), default="GradDiff")
    parser.add_argument("--no-fast-path", action="store_true")
    parser.add_argument("--project", choices=("all", "forget"), default="all")
    parser.add_argument("--zero-stage", type=int, choices=(1, 2, 3))
    parser.add_argument(
        "--offload", action="store_true", help="the optimizer on the CPU (ZeRO)"
    )
    parser.add_argument("--fsdp2", action="store_true", help="torch's fully_shard")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--save-steps", type=int, help="checkpoint every N steps")
    parser.add_argument("--resume-from", help="a checkpoint folder to resume from")
    return parser


def train(options: argparse.Namespace) -> None:
    """One run; every rank writes its record."""
    cpu = options.device == "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    backend = ("gloo" if cpu else "nccl") if world > 1 else None
    shared_gpu = not cpu and torch.cuda.device_count() < world
    if shared_gpu:
        # Fewer GPUs than ranks: every rank on cuda:0 (the Trainer binds rank k to
        # cuda:LOCAL_RANK), over gloo, since NCCL refuses two ranks on one GPU.
        os.environ["LOCAL_RANK"] = "0"
        backend = "gloo"
    if options.zero_stage:
        engine = {"deepspeed": deepspeed_config(options.zero_stage, options.offload)}
        engine |= {"ddp_backend": backend} if shared_gpu else {}
    elif options.fsdp2:
        engine = {"fsdp": True, "fsdp_config": FSDP2_CONFIG, "ddp_backend": backend}
        engine |= {"use_cpu": cpu}
        if cpu:
            allow_fsdp_on_cpu()
    else:
        engine = {"use_cpu": cpu, "ddp_backend": backend}
    if options.save_steps:
        engine |= {"save_strategy": "steps", "save_steps": options.save_steps}

    class Sequential(gru_trainer_class(BASES[options.method])):
        def _get_train_sampler(self, *args):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    args = TrainingArguments(
        output_dir=str(options.out / "trainer"),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=options.grad_accum,
        max_steps=4,
        learning_rate=0.05,
        **{k: v for k, v in TOY_ARGS.items() if k not in engine and k != "use_cpu"},
        **engine,
    )
    settings = GRUSettings(fast_path=not options.no_fast_path, project=options.project)
    trainer = Sequential(
        model=tiny_model(),
        args=args,
        train_dataset=ForgetRetain(16),
        data_collator=collate,
        gru_settings=settings,
    )
    trainer.seen = []
    # The toy's compute_loss ignores num_items_in_batch: say so, as transformers
    # 4.46-4.5x would otherwise leave its loss undivided by the accumulation steps
    # (for base runs alike), and 1 rank accumulating would step GAS times larger.
    trainer.model_accepts_loss_kwargs = False
    trainer.train(resume_from_checkpoint=options.resume_from)
    rank = trainer.args.process_index
    held = trainer._gru_retain_part  # gru.project=forget's retain term of g
    history = [
        {"coef": s.coef, "cos": s.cos, "fired": s.fired} for s in trainer.gru_history
    ]
    record = {
        "world_size": trainer.args.world_size,
        "engine": trainer.accelerator.distributed_type.value,
        "fast_path": trainer.gru_fast_path,
        "offload": is_offloaded(trainer.optimizer.optimizer),
        "history": history,
        # GRU's persistent memory on this rank, and the model's trainable size.
        "ema_elements": sum(b.numel() for b in trainer.gru_reference.buffers),
        "held_elements": sum(b.numel() for b in held.buffers) if held else 0,
        "trainable_elements": sum(
            p.numel() for p in trainer.model.parameters() if p.requires_grad
        ),
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / f"rank{rank}.json").write_text(json.dumps(record))
    with gathered(trainer.model, options.zero_stage == 3):
        weights = {
            k: whole(v).cpu().clone() for k, v in trainer.model.state_dict().items()
        }
    if rank == 0:
        torch.save(weights, options.out / "weights.pt")


def deepspeed_config(stage: int, offload: bool) -> dict:
    """The host's accelerate DeepSpeed style: everything "auto" from the Trainer.

    Offload keeps the Trainer's optimizer (DeepSpeed's CPU Adam would be compiled
    first): DeepSpeed steps it on the fp32 partition on the CPU.
    """
    config = {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
    }
    if offload:
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
        config["zero_force_ds_cpu_optimizer"] = False
    return config


FSDP2_CONFIG = {
    "version": 2,
    "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
    # Each rank saves its shards (the full state dict is gathered on rank 0 only,
    # which transformers 5.24's safetensors save then fails on, with or without GRU).
    "state_dict_type": "SHARDED_STATE_DICT",
}


def allow_fsdp_on_cpu() -> None:
    """Let accelerate run FSDP on CPU processes (gloo), for these tests only.

    accelerate (1.12 read) turns FSDP on only for accelerator device types and
    leaves a CPU run ``MULTI_CPU`` with its FSDP plugin unused; everything after
    that choice (``fully_shard``, the Trainer's FSDP paths, sharded checkpoints)
    runs on CPU. So the choice is made as accelerate makes it for a GPU.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    init = AcceleratorState.__init__
    if getattr(init, "allows_fsdp_on_cpu", False):
        return

    @functools.wraps(init)
    def init_allowing_fsdp(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if (
            fsdp_plugin is not None
            and self.distributed_type == DistributedType.MULTI_CPU
        ):
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    init_allowing_fsdp.allows_fsdp_on_cpu = True
    AcceleratorState.__init__ = init_allowing_fsdp


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A weight, gathered from its shards under FSDP2."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def gathered(model: torch.nn.Module, sharded: bool):
    """ZeRO-3 keeps each rank's slice of the weights; gather them to compare."""
    if not sharded:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()))


if __name__ == "__main__":
    main()
