"""One run of the toy GRU trainer, on one process or as a rank under ``torchrun``.

    python tests/ddp_worker.py --out DIR --grad-accum 2
    torchrun --nproc_per_node 2 tests/ddp_worker.py --out DIR --grad-accum 1

Both see the same global batches: the sampler is sequential and accelerate hands
consecutive per-device batches to consecutive ranks. Each rank writes the GRU
statistics of every step to ``rank<N>.json``; rank 0 writes ``weights.pt``.
"""

from __future__ import annotations

import argparse
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
from gru_plugin.trainer import gru_trainer_class

BASES = {"GradAscent": GradientAscent, "GradDiff": GradDiff}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grad-accum", type=int, required=True)
    parser.add_argument("--method", choices=sorted(BASES), default="GradDiff")
    parser.add_argument("--no-fast-path", action="store_true")
    options = parser.parse_args()

    class Sequential(gru_trainer_class(BASES[options.method])):
        def _get_train_sampler(self):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    args = TrainingArguments(
        output_dir=str(options.out / "trainer"),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=options.grad_accum,
        max_steps=4,
        learning_rate=0.05,
        **TOY_ARGS,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    settings = GRUSettings(fast_path=not options.no_fast_path)
    trainer = Sequential(
        model=tiny_model(),
        args=args,
        train_dataset=ForgetRetain(16),
        data_collator=collate,
        gru_settings=settings,
    )
    trainer.seen = []
    trainer.train()
    rank = trainer.args.process_index
    history = [
        {"coef": s.coef, "cos": s.cos, "fired": s.fired} for s in trainer.gru_history
    ]
    record = {
        "world_size": trainer.args.world_size,
        "engine": trainer.accelerator.distributed_type.value,
        "fast_path": trainer.gru_fast_path,
        "history": history,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / f"rank{rank}.json").write_text(json.dumps(record))
    if rank == 0:
        torch.save(trainer.model.state_dict(), options.out / "weights.pt")


if __name__ == "__main__":
    main()
