"""Does GRU help? TOFU unlearning with a tiny model: every method, base and ``+gru``.

    python benchmarks/tofu_reproduction.py --preset quick --out runs/demo
    python benchmarks/tofu_reproduction.py --data-dir DIR --out runs/repro
    python benchmarks/tofu_reproduction.py --preset smoke --data-dir DIR --out DIR2

The TOFU recipe, shrunk to a CPU, all through the real host (``src/train.py`` and
``src/eval.py`` via ``gru-unlearn``/``gru-plugin eval``). TOFU comes from
``--data-dir`` (the hub's configs as json files) or, without it, from the hub
(``locuslab/TOFU``), read as the host's own dataset configs read it.

1. a tiny random-init Llama + BPE tokenizer (our ``tiny_model``);
2. *general knowledge* (``full``, ``smoke``): fine-tune it on TOFU's ``real_authors``
   + ``world_facts`` QA (what ``model_utility`` measures besides the retain set);
3. the *target* = that model fine-tuned on ``full``; with the host's eval also the
   *retain model* = the same recipe on the retain split; both with the general set
   replayed (a tiny model forgets it otherwise); the retain model's TOFU eval is the
   reference log for ``forget_quality`` and ``privleak``;
4. unlearn the forget split from the target with each method, base and
   ``+gru=default``, same hyper-parameters, budget and seeds;
5. measure: the host's TOFU eval of every model, then ``gru-plugin report`` over
   ``evals/`` → ``report/`` (table, CSV, plots); or, for ``quick``, the mean answer
   NLL on the forget and retain sets → ``results.md`` (minutes instead of an hour).

Every stage is skipped when its output exists, so an interrupted run resumes
where it stopped; ``--jobs`` runs independent stages side by side (one torch
thread each). Host logs go to ``logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from answer_nll import mean_answer_nll, write_nll_table

from gru_plugin.cli import OFFLINE_ENV, find_host
from gru_plugin.local_data import TOFU_HUB
from gru_plugin.upstream import METHODS

MODEL = "model=Llama-3.2-1B-Instruct"  # the host's config; only paths are ours
TRAIN_DATA = "data.train.TOFU_QA_full.args.hf_args"  # the finetune experiment's set

VARIANTS = {
    "base": [],
    "gru": ["+gru=default"],
    "gru:forget": ["+gru=default", "gru.project=forget"],
    "gru:host": ["+gru=default", "gru.reference=host"],
}
"""Each unlearning run's GRU overrides, by variant."""


def run_label(method: str, variant: str) -> str:
    """``GradDiff``, ``GradDiff_GRU``, ``GradDiff_GRU-forget``: the report's labels."""
    if variant == "base":
        return method
    _, _, detail = variant.partition(":")
    return f"{method}_GRU" + (f"-{detail}" if detail else "")


def rmu_layers(layers: int, restricted: bool) -> list[str]:
    """RMU's layers on a ``layers``-deep model: the WMDP recipe steers layer 7 of 32
    and (``restricted``) trains only the MLPs of layers 5-7; here the middle layer
    and the one below it."""
    steer = layers // 2
    overrides = [f"trainer.method_args.module_regex=model\\.layers\\.{steer}"]
    if restricted:
        trained = f"({steer - 1}|{steer})"
        overrides.append(
            "trainer.method_args.trainable_params_regex="
            f"['model\\.layers\\.{trained}\\.mlp\\.down_proj\\.weight']"
        )
    return overrides


@dataclass(frozen=True)
class Scale:
    """Everything that sets the run's size; written to ``out/scale.json``."""

    hidden: int = 128
    layers: int = 4
    vocab_size: int = 1024
    general_epochs: int = 10  # 0: no general-knowledge stage and no replay
    finetune_epochs: int = 10
    finetune_batch: int = 8
    finetune_lr: float = 3e-3
    finetune_steps: int | None = None  # caps every fine-tuning run
    unlearn_epochs: int | None = 3  # None: the host's
    unlearn_batch: int = 8
    unlearn_grad_accum: int = 2
    unlearn_lr: float | None = 1e-3  # None: the host's
    unlearn_steps: int | None = None  # caps every unlearning run
    target_splits: tuple[str, ...] = ("full",)  # what the target learns
    forget_split: str = "forget10"
    retain_split: str = "retain90"  # what the retain model learns, and GRU's retain
    holdout_split: str = "holdout10"
    methods: tuple[str, ...] = tuple(METHODS)
    variants: tuple[str, ...] = ("base", "gru", "gru:forget")
    extra_variants: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"RMU": ("gru:host",)}
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    checkpoints: int = 3  # evaluated along each unlearning run (0: the end only)
    method_args: dict[str, list[str]] = field(
        default_factory=lambda: {
            # RMU steers a middle layer: layers.7 of the 1B model's 16, here 2 of 4.
            "RMU": ["trainer.method_args.module_regex=model\\.layers\\.2"]
        }
    )
    measure: str = "tofu_eval"  # or "answer_nll": no retain model, no host eval
    device: str = "cpu"  # "cuda": the host's own device settings, no --cpu
    hub_models: dict[str, str] | None = None  # target and retain: no fine-tuning


PRESETS = {
    # A TOFU world the tiny model memorizes (docs/reproduction.md): the target learns
    # forget05 + the 400 retain QA that model_utility reads, the retain model only
    # those 400; every run evaluated mid-way and at its end; two seeds.
    "full": Scale(
        finetune_epochs=40,
        unlearn_epochs=5,
        target_splits=("forget05", "retain_perturbed"),
        forget_split="forget05",
        retain_split="retain_perturbed",
        holdout_split="holdout05",
        seeds=(0, 1),
        checkpoints=2,
    ),
    # The README's main job: 5-7 minutes on 2 CPU cores.
    "quick": Scale(
        hidden=64,
        general_epochs=0,
        finetune_batch=16,
        finetune_steps=150,
        unlearn_steps=10,
        variants=("base", "gru"),
        extra_variants={},
        seeds=(0,),
        checkpoints=0,
        measure="answer_nll",
    ),
    # Every stage at toy size, for CI.
    "smoke": Scale(
        hidden=32,
        layers=2,
        vocab_size=512,
        finetune_steps=8,
        unlearn_steps=8,
        forget_split="forget01",
        retain_split="retain99",
        holdout_split="holdout01",
        methods=("GradDiff",),
        seeds=(0,),
        checkpoints=2,
    ),
    # The host's published TOFU recipe on a GPU: its targets and retain models from
    # the hub, its hyper-parameters (lr, epochs, bf16, optimizer), one GPU with the
    # effective batch of its scripts (2 GPUs × 4 × 4 accumulation = 32).
    "gpu": Scale(
        unlearn_epochs=None,
        unlearn_batch=8,
        unlearn_grad_accum=4,
        unlearn_lr=None,
        method_args={},
        checkpoints=5,
        device="cuda",
        hub_models={
            "target": "open-unlearning/tofu_Llama-3.2-1B-Instruct_full",
            "retain": "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90",
        },
    ),
}


class Pipeline:
    def __init__(self, host: Path, data_dir: Path | None, out: Path, scale: Scale):
        self.host, self.out, self.scale = host, out, scale
        self.data = out / "data"
        self.logs = out / "logs"
        self.source_data = data_dir

    # -- plumbing ---------------------------------------------------------------
    def host_command(
        self, command: list[str], overrides: tuple[str, ...]
    ) -> tuple[list[str], dict[str, str]]:
        """Argv and environment of one host process: one torch thread, offline
        with ``--data-dir``; without it the host reads TOFU from the hub."""
        argv = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
        argv += [f"--host={self.host}"]
        env = dict(os.environ)
        if self.scale.device == "cpu":
            argv.append("--cpu")
            env["OMP_NUM_THREADS"] = "1"
        if self.source_data:
            argv.append(f"--data-dir={self.source_data}")
            env |= OFFLINE_ENV
        return [*argv, *overrides], env

    def host_run(self, name: str, command: list[str], *overrides: str) -> None:
        """One host process, output in ``logs/<name>.log``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        argv, env = self.host_command(command, overrides)
        started = time.monotonic()
        with log.open("w") as handle:
            done = subprocess.run(
                argv, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        if done.returncode:
            tail = log.read_text()[-3000:]
            raise SystemExit(f"{name} failed (exit {done.returncode}); {log}:\n{tail}")
        print(f"  {name}: {time.monotonic() - started:.0f} s", flush=True)

    @staticmethod
    def model(path: Path | str, tokenizer: Path | str | None = None) -> list[str]:
        return [
            MODEL,
            f"model.model_args.pretrained_model_name_or_path={path}",
            f"model.tokenizer_args.pretrained_model_name_or_path={tokenizer or path}",
        ]

    @staticmethod
    def budget(
        epochs: int | None, batch: int, max_steps: int | None, grad_accum: int = 1
    ) -> list[str]:
        budget = [
            f"trainer.args.per_device_train_batch_size={batch}",
            f"trainer.args.gradient_accumulation_steps={grad_accum}",
        ]
        if epochs is not None:
            budget.append(f"trainer.args.num_train_epochs={epochs}")
        if max_steps:
            budget.append(f"+trainer.args.max_steps={max_steps}")
        return budget

    def tofu_file(self, name: str) -> Path:
        """TOFU config ``name`` as a json-lines file: ``--data-dir``'s, or the hub's,
        loaded as the host loads it and written to ``data/`` once."""
        if self.source_data:
            return self.source_data / f"{name}.json"
        path = self.data / f"{name}.json"
        if not path.exists():
            from datasets import load_dataset

            self.data.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.part")
            load_dataset(TOFU_HUB, name=name, split="train").to_json(partial)
            partial.rename(path)
        return path

    def training_file(self, splits: tuple[str, ...]) -> Path:
        """The fine-tuning set of these TOFU splits, with the general set replayed if
        there is one: a TOFU file itself, or a mix written to ``data/``."""
        name = "+".join(splits)
        if self.scale.general_epochs:
            return self.data / f"{name}_and_general.json"
        if len(splits) == 1:
            return self.tofu_file(splits[0])
        return self.data / f"{name}.json"

    # -- stages -----------------------------------------------------------------
    def prepare_data(self) -> None:
        """Write the general set and the fine-tuning mixes into ``data/``.

        ``general.json`` = real_authors + world_facts QA; ``<splits>_and_general.json``
        = the TOFU splits a model learns with the general set replayed, so the tiny
        model keeps that knowledge while it learns TOFU (a pretrained model keeps
        its own anyway).
        """
        self.data.mkdir(parents=True, exist_ok=True)

        def rows(name: str) -> list[dict]:
            lines = self.tofu_file(name).read_text().splitlines()
            return [json.loads(line) for line in lines if line.strip()]

        general = []
        if self.scale.general_epochs:
            general = [
                {key: row[key] for key in ("question", "answer")}
                for name in ("real_authors", "world_facts")
                for row in rows(name)
            ]
        mixes = {self.data / "general.json": general} if general else {}
        for splits in (self.scale.target_splits, (self.scale.retain_split,)):
            if general or len(splits) > 1:
                mix = [row for split in splits for row in rows(split)]
                mixes[self.training_file(splits)] = mix + general
        for path, mix in mixes.items():
            if not path.exists():
                path.write_text("".join(json.dumps(row) + "\n" for row in mix))

    def finetune(self, name: str, start: Path, data_file: Path, epochs: int) -> Path:
        """The host's TOFU finetune experiment on ``data_file``."""
        target = self.out / "models" / name
        if not (target / "model.safetensors").exists():
            self.host_run(
                f"finetune_{name}",
                ["gru-unlearn", "--config-name=train.yaml"],
                "experiment=finetune/tofu/default",
                f"task_name={name}",
                *self.model(start),
                f"{TRAIN_DATA}.path=json",
                f"+{TRAIN_DATA}.data_files={data_file}",
                f"trainer.args.learning_rate={self.scale.finetune_lr}",
                *self.budget(
                    epochs, self.scale.finetune_batch, self.scale.finetune_steps
                ),
                "trainer.args.logging_steps=50",
                f"paths.output_dir={target}",
            )
        return target

    def evaluate(
        self,
        name: str,
        model: Path | str,
        out: Path,
        retain_logs: Path | None,
        tokenizer: Path | str | None = None,
    ) -> None:
        """The host's TOFU eval of ``model`` into ``out`` (skipped if done)."""
        if (out / "TOFU_SUMMARY.json").exists():
            return
        self.host_run(
            f"eval_{name}",
            ["gru-plugin", "eval"],
            "experiment=eval/tofu/default",
            f"task_name={name}",
            *self.model(model, tokenizer),
            f"forget_split={self.scale.forget_split}",
            f"holdout_split={self.scale.holdout_split}",
            f"retain_logs_path={retain_logs or 'null'}",
            "eval.tofu.overwrite=true",
            f"paths.output_dir={out}",
        )

    def unlearn(self, method: str, variant: str, seed: int, target: Path | str) -> Path:
        label = run_label(method, variant)
        run_dir = self.out / "unlearn" / label / f"seed{seed}"
        if not (run_dir / "model.safetensors").exists():
            scale = self.scale
            self.host_run(
                f"unlearn_{label}_seed{seed}",
                ["gru-unlearn", "--config-name=unlearn.yaml"],
                "experiment=unlearn/tofu/default",
                f"trainer={method}",
                *VARIANTS[variant],
                f"task_name={label}_seed{seed}",
                *self.model(target),
                f"forget_split={scale.forget_split}",
                f"retain_split={scale.retain_split}",
                f"holdout_split={scale.holdout_split}",
                *(
                    [f"trainer.args.learning_rate={scale.unlearn_lr}"]
                    if scale.unlearn_lr is not None
                    else []
                ),
                *self.budget(
                    scale.unlearn_epochs,
                    scale.unlearn_batch,
                    scale.unlearn_steps,
                    scale.unlearn_grad_accum,
                ),
                *(
                    [
                        "trainer.args.save_strategy=steps",
                        f"+trainer.args.save_steps={1 / scale.checkpoints:.6g}",
                    ]
                    if scale.checkpoints
                    else []
                ),
                f"trainer.args.seed={seed}",
                "trainer.args.logging_steps=1",
                *scale.method_args.get(method, []),
                f"paths.output_dir={run_dir}",
            )
        return run_dir

    def evaluate_path(
        self, run_dir: Path, seed: int, target: Path | str, reference_log: Path
    ) -> None:
        """Each checkpoint of an unlearning run → ``trajectories/<label>/seed<N>/
        step<S>`` (the last is the final model, evaluated already); the
        checkpoint's weights are removed once evaluated."""
        label = run_dir.parent.name
        state = json.loads((run_dir / "trainer_state.json").read_text())
        for checkpoint in sorted(run_dir.glob("checkpoint-*")):
            step = int(checkpoint.name.split("-")[1])
            out = self.out / "trajectories" / label / f"seed{seed}" / f"step{step}"
            if step != state["global_step"]:  # the final model's eval is the end
                name = f"{label}_seed{seed}_step{step}"
                self.evaluate(name, checkpoint, out, reference_log, tokenizer=target)
            shutil.rmtree(checkpoint)

    def add_path_ends(self) -> None:
        """Every path starts at the target (step 0) and ends at the final model."""
        evals, paths = self.out / "evals", self.out / "trajectories"
        for run_dir in sorted((self.out / "unlearn").glob("*/seed*")):
            label, seed = run_dir.parent.name, run_dir.name
            state = json.loads((run_dir / "trainer_state.json").read_text())
            ends = {
                "step0": evals / "target",
                f"step{state['global_step']}": evals / label / seed,
            }
            for step, source in ends.items():
                point = paths / label / seed / step
                point.mkdir(parents=True, exist_ok=True)
                shutil.copy(source / "TOFU_SUMMARY.json", point)

    def train_models(self, jobs: int) -> tuple[Path | str, Path | str | None]:
        """The target, and the retain model when the host's eval needs one."""
        from gru_plugin.tiny_model import TEXT_FILES, make_tiny_model

        scale = self.scale
        if scale.hub_models:
            return scale.hub_models["target"], scale.hub_models["retain"]
        tiny = self.out / "models" / "tiny"
        if not (tiny / "model.safetensors").exists():
            texts = [self.tofu_file(Path(name).stem) for name in TEXT_FILES]
            make_tiny_model(
                tiny, texts[0].parent, scale.vocab_size, scale.hidden, scale.layers
            )
        start = tiny
        self.prepare_data()
        if scale.general_epochs:
            print("general knowledge (real_authors + world_facts)", flush=True)
            general = self.data / "general.json"
            start = self.finetune("general", tiny, general, scale.general_epochs)
        models = {"target": scale.target_splits}
        if scale.measure == "tofu_eval":
            models["retain"] = (scale.retain_split,)
        print(f"fine-tuning: {models}", flush=True)
        with ThreadPoolExecutor(jobs) as pool:
            trained = list(
                pool.map(
                    lambda job: self.finetune(
                        job[0], start, self.training_file(job[1]), scale.finetune_epochs
                    ),
                    models.items(),
                )
            )
        return trained[0], (trained[1] if len(trained) > 1 else None)

    def runs(self) -> list[tuple[str, str, int]]:
        """(method, variant, seed) of every unlearning run."""
        scale = self.scale
        return [
            (method, variant, seed)
            for seed in scale.seeds
            for method in scale.methods
            for variant in scale.variants + scale.extra_variants.get(method, ())
        ]

    def run(self, jobs: int) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "scale.json").write_text(json.dumps(asdict(self.scale), indent=2))
        target, retain = self.train_models(jobs)
        if self.scale.measure == "answer_nll":
            self.answer_nll_table(jobs, target)
        else:
            self.tofu_eval_report(jobs, target, retain)

    # -- measures ---------------------------------------------------------------
    def tofu_eval_report(self, jobs: int, target: Path, retain: Path) -> None:
        """Every model through the host's TOFU eval, then ``gru-plugin report``."""
        evals = self.out / "evals"
        reference = self.out / "reference" / "retain"
        self.evaluate("retain_reference", retain, reference, None)
        reference_log = reference / "TOFU_EVAL.json"

        def unlearn_and_evaluate(job: tuple[str, str, int]) -> None:
            method, variant, seed = job
            run_dir = self.unlearn(method, variant, seed, target)
            label = run_dir.parent.name
            out = evals / label / f"seed{seed}"
            self.evaluate(f"{label}_seed{seed}", run_dir, out, reference_log, target)
            self.evaluate_path(run_dir, seed, target, reference_log)

        print("evals of target and retain, then unlearning", flush=True)
        with ThreadPoolExecutor(jobs) as pool:
            done = [
                pool.submit(
                    self.evaluate, "target", target, evals / "target", reference_log
                ),
                pool.submit(
                    self.evaluate, "retain", retain, evals / "retain", reference_log
                ),
                *(pool.submit(unlearn_and_evaluate, job) for job in self.runs()),
            ]
            for future in done:
                future.result()
        from gru_plugin.report import plain_table, report

        paths = None
        if self.scale.checkpoints:
            self.add_path_ends()
            paths = self.out / "trajectories"
        rows, found = report(
            [evals, self.out / "unlearn"],
            self.out / "report",
            self.scale.forget_split,
            paths,
        )
        print(plain_table(rows) + "\n".join(found))

    def answer_nll_table(self, jobs: int, target: Path) -> None:
        """Unlearn, then each model's mean answer NLL → ``results.md``/``.json``."""
        print("unlearning", flush=True)
        with ThreadPoolExecutor(jobs) as pool:
            runs = pool.map(lambda job: self.unlearn(*job, target), self.runs())
            run_dirs = list(runs)
        forget = self.tofu_file(self.scale.forget_split)
        retain = self.tofu_file(self.scale.retain_split)
        results = {}
        for (method, variant, seed), run_dir in zip(self.runs(), run_dirs, strict=True):
            state = json.loads((run_dir / "trainer_state.json").read_text())
            fired = [e["gru/fired"] for e in state["log_history"] if "gru/fired" in e]
            seed_note = f" seed {seed}" if len(self.scale.seeds) > 1 else ""
            name = variant if variant == "base" else f"+{variant}"
            results[f"{method} {name}{seed_note}"] = {
                "steps": state["global_step"],
                "fired_rate": sum(fired) / len(fired) if fired else None,
                "forget_nll": mean_answer_nll(self.host, run_dir, forget),
                "retain_nll": mean_answer_nll(self.host, run_dir, retain),
            }
        results["target (before unlearning)"] = {
            "forget_nll": mean_answer_nll(self.host, target, forget),
            "retain_nll": mean_answer_nll(self.host, target, retain),
        }
        write_nll_table(self.out, results)


def with_settings(scale: Scale, settings: list[str]) -> Scale:
    """``scale`` with ``KEY=VALUE`` overrides (YAML values; lists become tuples)."""
    import yaml

    known = {f.name for f in fields(Scale)}
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in known:
            raise SystemExit(f"--set {key}: no such setting; they are {sorted(known)}")
        parsed = yaml.safe_load(value)
        scale = replace(
            scale, **{key: tuple(parsed) if isinstance(parsed, list) else parsed}
        )
    return scale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument(
        "--data-dir", type=Path, help="TOFU json files (default: the hub)"
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--host", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="host processes at once")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    parser.add_argument("--methods", nargs="+", help="override the methods")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override any size or setting, e.g. hidden=192 "
        "target_splits=[forget10,retain_perturbed] (YAML values)",
    )
    args = parser.parse_args(argv)
    scale = with_settings(PRESETS[args.preset], args.set)
    if args.seeds:
        scale = replace(scale, seeds=tuple(args.seeds))
    if args.methods:
        scale = replace(scale, methods=tuple(args.methods))
    host = find_host(str(args.host) if args.host else None)
    data_dir = args.data_dir.resolve() if args.data_dir else None
    started = time.monotonic()
    Pipeline(host, data_dir, args.out.resolve(), scale).run(args.jobs)
    print(f"pipeline: {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
