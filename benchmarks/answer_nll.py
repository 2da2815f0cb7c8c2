"""The quick preset's measure: mean answer NLL, and its table.

A tiny model's TOFU eval scores sit near zero and take minutes per model; the mean
NLL of the answer tokens moves with every unlearning step and takes seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NLL_ROWS = 400
"""Rows read from each of the forget and retain sets."""


def mean_answer_nll(host: Path, model_dir: Path, data_file: Path) -> float:
    """Mean answer-token NLL over the first rows of ``data_file``, tokenized and
    batched by the host's own dataset and collator."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if str(host / "src") not in sys.path:
        sys.path.insert(0, str(host / "src"))
    from data.collators import DataCollatorForSupervisedDataset
    from data.qa import QADataset

    template = OmegaConf.load(host / "configs/model/Llama-3.2-1B-Instruct.yaml")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = QADataset(
        hf_args={
            "path": "json",
            "data_files": str(data_file),
            "split": f"train[:{NLL_ROWS}]",
        },
        template_args=template.template_args,
        tokenizer=tokenizer,
    )
    collate = DataCollatorForSupervisedDataset(tokenizer=tokenizer)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, collate_fn=collate)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            n = len(batch["input_ids"])
            batch = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
            total += model(**batch).loss.item() * n
            count += n
    return total / count


def write_nll_table(out: Path, results: dict[str, dict]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| run | steps | gru/fired rate | forget NLL ↑ | retain NLL ↓ |",
        "|---|---|---|---|---|",
    ]
    for name, row in results.items():
        fired = row.get("fired_rate")
        lines.append(
            f"| {name} | {row.get('steps', '–')} | "
            f"{'–' if fired is None else f'{fired:.2f}'} | "
            f"{row['forget_nll']:.3f} | {row['retain_nll']:.3f} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    print(table)
