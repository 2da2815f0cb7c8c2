"""Does GRU help? TOFU forget10 at small scale: every method, base and ``+gru``.

    python benchmarks/tofu_reproduction.py --data-dir DIR --out runs/repro
    python benchmarks/tofu_reproduction.py --data-dir DIR --out runs/smoke --smoke

The TOFU recipe, shrunk to a CPU, all through the real host (``src/train.py`` and
``src/eval.py`` via ``gru-unlearn``/``gru-plugin eval``):

1. a tiny random-init Llama + BPE tokenizer (our ``tiny_model``);
2. *general knowledge*: fine-tune it on TOFU's ``real_authors`` + ``world_facts``
   QA (what ``model_utility`` measures besides the retain set);
3. the *target* = that model fine-tuned on ``full``, the *retain model* = the same
   recipe on ``retain90``, both with the general set replayed (a tiny model forgets
   it otherwise); the retain model's TOFU eval is the reference log for
   ``forget_quality`` and ``privleak``;
4. unlearn ``forget10`` from the target with each method, base and ``+gru=default``,
   same hyper-parameters, budget and seeds; evaluate each with the host's TOFU eval;
5. ``gru-plugin report`` over ``evals/`` → ``report/`` (table, CSV, plots).

Every stage is skipped when its output exists, so an interrupted run resumes
where it stopped; ``--jobs`` runs independent stages side by side (one torch
thread each). Host logs go to ``logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from gru_plugin.cli import OFFLINE_ENV, find_host

METHODS = ("GradAscent", "GradDiff", "NPO", "SimNPO", "RMU")
MODEL = "model=Llama-3.2-1B-Instruct"  # the host's config; only paths are ours


@dataclass(frozen=True)
class Scale:
    """Everything that sets the run's size; written to ``out/scale.json``."""

    hidden: int = 128
    layers: int = 4
    vocab_size: int = 1024
    general_epochs: int = 10
    finetune_epochs: int = 10
    finetune_batch: int = 8
    finetune_lr: float = 3e-3
    unlearn_epochs: int = 3
    unlearn_batch: int = 8
    unlearn_grad_accum: int = 2
    unlearn_lr: float = 1e-3
    max_steps: int | None = None  # caps every training run (smoke only)
    forget_split: str = "forget10"
    retain_split: str = "retain90"
    holdout_split: str = "holdout10"
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    method_args: dict[str, list[str]] = field(
        default_factory=lambda: {
            # RMU steers a middle layer: layers.7 of the 1B model's 16, here 2 of 4.
            "RMU": ["trainer.method_args.module_regex=model\\.layers\\.2"]
        }
    )


SMOKE = Scale(
    hidden=32,
    layers=2,
    vocab_size=512,
    max_steps=8,
    forget_split="forget01",
    retain_split="retain99",
    holdout_split="holdout01",
    methods=("GradDiff",),
    seeds=(0,),
)


class Pipeline:
    def __init__(self, host: Path, data_dir: Path, out: Path, scale: Scale):
        self.host, self.out, self.scale = host, out, scale
        self.data = out / "data"
        self.logs = out / "logs"
        self.source_data = data_dir

    # -- plumbing ---------------------------------------------------------------
    def host_run(self, name: str, command: list[str], *overrides: str) -> None:
        """One host process, one torch thread, output in ``logs/<name>.log``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": "1"}
        started = time.monotonic()
        argv = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
        argv += [f"--host={self.host}", f"--data-dir={self.data}", "--cpu"]
        with log.open("w") as handle:
            done = subprocess.run(
                [*argv, *overrides], env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        if done.returncode:
            tail = log.read_text()[-3000:]
            raise SystemExit(f"{name} failed (exit {done.returncode}); {log}:\n{tail}")
        print(f"  {name}: {time.monotonic() - started:.0f} s", flush=True)

    @staticmethod
    def model(path: Path) -> list[str]:
        return [
            MODEL,
            f"model.model_args.pretrained_model_name_or_path={path}",
            f"model.tokenizer_args.pretrained_model_name_or_path={path}",
        ]

    def budget(self, epochs: int, batch: int, grad_accum: int = 1) -> list[str]:
        budget = [
            f"trainer.args.num_train_epochs={epochs}",
            f"trainer.args.per_device_train_batch_size={batch}",
            f"trainer.args.gradient_accumulation_steps={grad_accum}",
        ]
        if self.scale.max_steps:
            budget.append(f"+trainer.args.max_steps={self.scale.max_steps}")
        return budget

    # -- stages -----------------------------------------------------------------
    def prepare_data(self) -> None:
        """Link the TOFU files; write the general set and the fine-tuning mixes.

        ``general.json`` = real_authors + world_facts QA; ``<split>_and_general.json``
        = a TOFU split with the general set replayed, so the tiny model keeps that
        knowledge while it learns TOFU (a pretrained model keeps its own anyway).
        """
        self.data.mkdir(parents=True, exist_ok=True)
        for source in self.source_data.glob("*.json*"):
            link = self.data / source.name
            if not link.exists():
                link.symlink_to(source.resolve())

        def rows(name: str) -> list[dict]:
            lines = (self.source_data / f"{name}.json").read_text().splitlines()
            return [json.loads(line) for line in lines if line.strip()]

        general = [
            {key: row[key] for key in ("question", "answer")}
            for name in ("real_authors", "world_facts")
            for row in rows(name)
        ]
        mixes = {
            "general": general,
            **{
                f"{split}_and_general": rows(split) + general
                for split in ("full", self.scale.retain_split)
            },
        }
        for name, mix in mixes.items():
            path = self.data / f"{name}.json"
            if not path.exists():
                path.write_text("".join(json.dumps(row) + "\n" for row in mix))

    def finetune(self, name: str, start: Path, split: str, epochs: int) -> Path:
        """The host's TOFU finetune experiment on ``split``, scaled to this model."""
        target = self.out / "models" / name
        if not (target / "model.safetensors").exists():
            self.host_run(
                f"finetune_{name}",
                ["gru-unlearn", "--config-name=train.yaml"],
                "experiment=finetune/tofu/default",
                f"task_name={name}",
                *self.model(start),
                f"data.train.TOFU_QA_full.args.hf_args.name={split}",
                f"trainer.args.learning_rate={self.scale.finetune_lr}",
                *self.budget(epochs, self.scale.finetune_batch),
                "trainer.args.logging_steps=50",
                f"paths.output_dir={target}",
            )
        return target

    def evaluate(self, name: str, model: Path, out: Path, retain_logs: Path | None):
        """The host's TOFU eval of ``model`` into ``out`` (skipped if done)."""
        if (out / "TOFU_SUMMARY.json").exists():
            return
        self.host_run(
            f"eval_{name}",
            ["gru-plugin", "eval"],
            "experiment=eval/tofu/default",
            f"task_name={name}",
            *self.model(model),
            f"forget_split={self.scale.forget_split}",
            f"holdout_split={self.scale.holdout_split}",
            f"retain_logs_path={retain_logs or 'null'}",
            "eval.tofu.overwrite=true",
            f"paths.output_dir={out}",
        )

    def unlearn(self, method: str, gru: bool, seed: int, target: Path) -> Path:
        label = f"{method}_GRU" if gru else method
        run_dir = self.out / "unlearn" / label / f"seed{seed}"
        if not (run_dir / "model.safetensors").exists():
            self.host_run(
                f"unlearn_{label}_seed{seed}",
                ["gru-unlearn", "--config-name=unlearn.yaml"],
                "experiment=unlearn/tofu/default",
                f"trainer={method}",
                *(["+gru=default"] if gru else []),
                f"task_name={label}_seed{seed}",
                *self.model(target),
                f"forget_split={self.scale.forget_split}",
                f"retain_split={self.scale.retain_split}",
                f"holdout_split={self.scale.holdout_split}",
                f"trainer.args.learning_rate={self.scale.unlearn_lr}",
                *self.budget(
                    self.scale.unlearn_epochs,
                    self.scale.unlearn_batch,
                    self.scale.unlearn_grad_accum,
                ),
                f"trainer.args.seed={seed}",
                "trainer.args.logging_steps=1",
                *self.scale.method_args.get(method, []),
                f"paths.output_dir={run_dir}",
            )
        return run_dir

    def run(self, jobs: int) -> None:
        from gru_plugin.tiny_model import make_tiny_model

        scale = self.scale
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "scale.json").write_text(json.dumps(asdict(scale), indent=2))
        self.prepare_data()
        tiny = self.out / "models" / "tiny"
        if not (tiny / "model.safetensors").exists():
            make_tiny_model(
                tiny, self.data, scale.vocab_size, scale.hidden, scale.layers
            )
        print("general knowledge (real_authors + world_facts)", flush=True)
        general = self.finetune("general", tiny, "general", scale.general_epochs)
        print("target (full) and retain model (retain90)", flush=True)
        with ThreadPoolExecutor(jobs) as pool:
            target, retain = pool.map(
                lambda job: self.finetune(*job),
                [
                    ("target", general, "full_and_general", scale.finetune_epochs),
                    (
                        "retain",
                        general,
                        f"{scale.retain_split}_and_general",
                        scale.finetune_epochs,
                    ),
                ],
            )
        evals = self.out / "evals"
        reference = retain / "evals_reference"
        self.evaluate("retain_reference", retain, reference, None)
        reference_log = reference / "TOFU_EVAL.json"

        def unlearn_and_evaluate(job: tuple[str, bool, int]) -> None:
            method, gru, seed = job
            run_dir = self.unlearn(method, gru, seed, target)
            label = run_dir.parent.name
            out = evals / label / f"seed{seed}"
            self.evaluate(f"{label}_seed{seed}", run_dir, out, reference_log)

        print("evals of target and retain, then unlearning", flush=True)
        jobs_list = [
            (method, gru, seed)
            for seed in scale.seeds
            for method in scale.methods
            for gru in (False, True)
        ]
        with ThreadPoolExecutor(jobs) as pool:
            done = [
                pool.submit(
                    self.evaluate, "target", target, evals / "target", reference_log
                ),
                pool.submit(
                    self.evaluate, "retain", retain, evals / "retain", reference_log
                ),
                *(pool.submit(unlearn_and_evaluate, job) for job in jobs_list),
            ]
            for future in done:
                future.result()
        from gru_plugin.report import plain_table, report

        rows, found = report(
            [evals, self.out / "unlearn"], self.out / "report", scale.forget_split
        )
        print(plain_table(rows) + "\n".join(found))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--host", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="host processes at once")
    parser.add_argument("--smoke", action="store_true", help="tiny CI-sized run")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    parser.add_argument("--methods", nargs="+", help="override the methods")
    args = parser.parse_args(argv)
    scale = SMOKE if args.smoke else Scale()
    if args.seeds:
        scale = replace(scale, seeds=tuple(args.seeds))
    if args.methods:
        scale = replace(scale, methods=tuple(args.methods))
    host = find_host(str(args.host) if args.host else None)
    started = time.monotonic()
    Pipeline(host, args.data_dir.resolve(), args.out.resolve(), scale).run(args.jobs)
    print(f"pipeline: {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
