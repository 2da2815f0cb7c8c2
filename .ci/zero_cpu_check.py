"""Do plain DDP and DeepSpeed ZeRO train under this venv's transformers/accelerate
on a CPU?

    .venv-tf5/bin/python .ci/zero_cpu_check.py        # DDP, ZeRO-1, -2, -3
    .venv-tf5/bin/python .ci/zero_cpu_check.py 0 3    # DDP and ZeRO-3 only

A plain transformers Trainer (no gru_plugin) on a tiny random Llama, 2 processes
over gloo (DeepSpeed's CPU accelerator for ZeRO), 2 micro-batches per step. Each
run must take its steps with a finite loss and change the weights. For choosing the
versions in a .ci/requirements-*.txt; not part of the test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = 3


def engine(stage: int) -> dict:
    """Stage 0: plain DDP on the CPU; 1-3: that ZeRO stage."""
    if stage == 0:
        return {"use_cpu": True, "ddp_backend": "gloo"}
    return {
        "deepspeed": {
            "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "zero_optimization": {"stage": stage},
            "zero_allow_untested_optimizer": True,
        }
    }


def worker(stage: int, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=32,
    )
    model = LlamaForCausalLM(config)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    ids = torch.randint(0, 64, (32, 12))
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=STEPS,
        learning_rate=1e-2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        **(engine(stage)),
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    if stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            changed = any(
                not torch.equal(p.detach().cpu(), before[k])
                for k, p in model.named_parameters()
            )
    else:
        changed = any(
            not torch.equal(p.detach().cpu(), before[k])
            for k, p in model.named_parameters()
        )
    record = {
        "world_size": trainer.args.world_size,
        "engine": trainer.accelerator.distributed_type.value,
        "global_step": trainer.state.global_step,
        "losses": losses,
        "changed": changed,
    }
    (out / f"rank{trainer.args.process_index}.json").write_text(json.dumps(record))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main() -> int:
    if "--worker" in sys.argv:
        worker(int(sys.argv[2]), Path(sys.argv[3]))
        return 0
    env = os.environ | {
        "DS_ACCELERATOR": "cpu",
        "LOCAL_SIZE": "2",  # spares ZeRO-3 a call to the numactl binary
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    # DeepSpeed JIT-builds its CPU all-reduce op (DS_BUILD_OPS=0) into
    # ~/.cache/torch_extensions by default, where another venv's DeepSpeed version
    # rebuilds the same name: keep this venv's build apart.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    failed = 0
    for stage in [int(a) for a in sys.argv[1:]] or [0, 1, 2, 3]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command += ["--nproc_per_node=2", __file__, "--worker", str(stage), tmp]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            records = [
                json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))
            ]
        ok = (
            done.returncode == 0
            and len(records) == 2
            and all(
                r["global_step"] == STEPS
                and r["engine"] == ("DEEPSPEED" if stage else "MULTI_CPU")
                and r["changed"]
                and len(r["losses"]) == STEPS
                and all(loss == loss and abs(loss) < 1e6 for loss in r["losses"])
                for r in records
            )
        )
        failed += not ok
        name = f"ZeRO-{stage}" if stage else "DDP"
        print(f"{name}: {'ok' if ok else 'FAILED'} {records}", flush=True)
        if not ok:
            print(done.stderr[-4000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
