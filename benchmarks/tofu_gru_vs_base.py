"""The main job: base vs ``+gru`` for five methods on TOFU, tiny model, real host, CPU.

    python benchmarks/tofu_gru_vs_base.py --data-dir ../shared/data/tofu --out runs/demo

Steps: build a tiny Llama + tokenizer from the data (our code, nothing downloaded);
fine-tune it on TOFU ``full`` with the host's finetune experiment; unlearn
``forget10`` with each method, once as the host ships it and once with
``+gru=default``, same seed and budget; then measure the mean answer NLL on the
forget set and on a retain sample with the host's own dataset and collator.
Writes ``results.md`` and ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from gru_plugin.cli import CPU_OVERRIDES, OFFLINE_ENV

METHODS = ["GradAscent", "GradDiff", "NPO", "SimNPO", "RMU"]
CPU = ["model=Llama-3.2-1B-Instruct", *CPU_OVERRIDES]
METHOD_ARGS = {"RMU": ["trainer.method_args.module_regex=model\\.layers\\.2"]}


def gru_unlearn(host: Path, data_dir: Path, config: str, overrides: list[str]) -> None:
    command = [
        str(Path(sys.executable).with_name("gru-unlearn")),
        f"--host={host}",
        f"--data-dir={data_dir}",
        f"--config-name={config}",
        *overrides,
    ]
    done = subprocess.run(
        command, env={**os.environ, **OFFLINE_ENV}, capture_output=True
    )
    if done.returncode:
        sys.stderr.write(done.stderr.decode()[-3000:])
        raise SystemExit(f"host run failed: {' '.join(overrides)}")


def model_overrides(path: Path) -> list[str]:
    return [
        f"model.model_args.pretrained_model_name_or_path={path}",
        f"model.tokenizer_args.pretrained_model_name_or_path={path}",
    ]


def mean_nll(host: Path, model_dir: Path, data_file: Path, limit: int) -> float:
    """Mean answer-token NLL, tokenized and batched by the host's own code."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(host / "src"))
    from data.collators import DataCollatorForSupervisedDataset
    from data.qa import QADataset

    template = OmegaConf.load(host / "configs/model/Llama-3.2-1B-Instruct.yaml")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = QADataset(
        hf_args={
            "path": "json",
            "data_files": str(data_file),
            "split": f"train[:{limit}]",
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


def gru_summary(run_dir: Path) -> dict:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    logs = [entry for entry in state["log_history"] if "gru/fired" in entry]
    if not logs:
        return {"steps": state["global_step"], "fired_rate": None}
    return {
        "steps": state["global_step"],
        "fired_rate": sum(entry["gru/fired"] for entry in logs) / len(logs),
        "mean_cos": sum(entry["gru/cos"] for entry in logs) / len(logs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--host", type=Path, default=None)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--unlearn-steps", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    args = parser.parse_args(argv)

    from gru_plugin.cli import find_host
    from gru_plugin.tiny_model import make_tiny_model

    host = find_host(str(args.host) if args.host else None)
    data_dir, out = args.data_dir.resolve(), args.out.resolve()
    tiny, target = out / "tiny-llama", out / "target"
    if not (tiny / "model.safetensors").exists():
        make_tiny_model(tiny, data_dir)
    if not (target / "model.safetensors").exists():
        print(f"fine-tuning the target on TOFU full ({args.finetune_steps} steps)")
        gru_unlearn(
            host,
            data_dir,
            "train.yaml",
            [
                "experiment=finetune/tofu/default",
                "task_name=target",
                *CPU,
                *model_overrides(tiny),
                "trainer.args.learning_rate=3e-3",
                f"+trainer.args.max_steps={args.finetune_steps}",
                "trainer.args.per_device_train_batch_size=16",
                "trainer.args.gradient_accumulation_steps=1",
                f"paths.output_dir={target}",
            ],
        )

    results = {}
    for method in args.methods:
        for variant, extra in (("base", []), ("+gru", ["+gru=default"])):
            run_dir = out / f"{method}{'_gru' if extra else ''}"
            if not (run_dir / "model.safetensors").exists():
                print(f"unlearning: {method} {variant}")
                gru_unlearn(
                    host,
                    data_dir,
                    "unlearn.yaml",
                    [
                        "experiment=unlearn/tofu/default",
                        f"trainer={method}",
                        *extra,
                        f"task_name={run_dir.name}",
                        *CPU,
                        *model_overrides(target),
                        "forget_split=forget10",
                        "retain_split=retain90",
                        "holdout_split=holdout10",
                        "trainer.args.learning_rate=1e-3",
                        f"+trainer.args.max_steps={args.unlearn_steps}",
                        "trainer.args.per_device_train_batch_size=8",
                        "trainer.args.gradient_accumulation_steps=2",
                        "trainer.args.logging_steps=1",
                        *METHOD_ARGS.get(method, []),
                        f"paths.output_dir={run_dir}",
                    ],
                )
            results[f"{method} {variant}"] = {
                **gru_summary(run_dir),
                "forget_nll": mean_nll(host, run_dir, data_dir / "forget10.json", 400),
                "retain_nll": mean_nll(host, run_dir, data_dir / "retain90.json", 400),
            }
    results["target (before unlearning)"] = {
        "forget_nll": mean_nll(host, target, data_dir / "forget10.json", 400),
        "retain_nll": mean_nll(host, target, data_dir / "retain90.json", 400),
    }
    write_report(out, results)


def write_report(out: Path, results: dict) -> None:
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


if __name__ == "__main__":
    main()
