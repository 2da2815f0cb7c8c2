"""One run of the toy GRU trainer, on one process or as a rank under ``torchrun``.

    python tests/ddp_worker.py --out DIR --grad-accum 2
    torchrun --nproc_per_node 2 tests/ddp_worker.py --out DIR --grad-accum 1
    DS_ACCELERATOR=cpu LOCAL_SIZE=2 torchrun --nproc_per_node 2 \
        tests/ddp_worker.py --out DIR --grad-accum 1 --zero-stage 3

``launch`` runs it in a subprocess, with the environment each device needs.

Both see the same global batches: the sampler is sequential and accelerate hands
consecutive per-device batches to consecutive ranks. Each rank writes the GRU
statistics of every step to ``rank<N>.json``; rank 0 writes ``weights.pt``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

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

from gru_plugin.settings import GRUSettings
from gru_plugin.testing import deepspeed_shm_cleanup, run_processes
from gru_plugin.trainer import gru_trainer_class

BASES = {"GradAscent": GradientAscent, "GradDiff": GradDiff}


def launch(out: Path, processes: int, device: str, *options: str) -> list[dict]:
    """Run this worker on ``processes`` processes; each rank's record."""
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
    command = [*launcher, __file__, f"--out={out}", f"--device={device}", *options]
    with deepspeed_shm_cleanup():
        done = run_processes(command, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed:\n{done.stderr[-3000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


def max_weight_difference(one: Path, two: Path) -> float:
    """The largest relative L2 difference of a final weight between two runs."""
    weights_one = torch.load(one / "weights.pt", map_location="cpu")
    weights_two = torch.load(two / "weights.pt", map_location="cpu")
    return max(
        ((weights_two[name] - weight).norm() / weight.norm().clamp_min(1e-12)).item()
        for name, weight in weights_one.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grad-accum", type=int, required=True)
    parser.add_argument("--method", choices=sorted(BASES), default="GradDiff")
    parser.add_argument("--no-fast-path", action="store_true")
    parser.add_argument("--project", choices=("all", "forget"), default="all")
    parser.add_argument("--zero-stage", type=int, choices=(1, 2, 3))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--save-steps", type=int, help="checkpoint every N steps")
    parser.add_argument("--resume-from", help="a checkpoint folder to resume from")
    options = parser.parse_args()
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
        engine = {"deepspeed": deepspeed_config(options.zero_stage)}
        engine |= {"ddp_backend": backend} if shared_gpu else {}
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
        weights = {k: v.cpu().clone() for k, v in trainer.model.state_dict().items()}
    if rank == 0:
        torch.save(weights, options.out / "weights.pt")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def deepspeed_config(stage: int) -> dict:
    """The host's accelerate DeepSpeed style: everything "auto" from the Trainer."""
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
    }


def gathered(model: torch.nn.Module, sharded: bool):
    """ZeRO-3 keeps each rank's slice of the weights; gather them to compare."""
    if not sharded:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()))


if __name__ == "__main__":
    main()
