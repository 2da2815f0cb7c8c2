"""GRU on the host's MUSE and WMDP recipes: data shaped from TOFU, a tiny model.

    python benchmarks/muse_wmdp.py --tofu DIR --out runs/muse_wmdp
    python benchmarks/muse_wmdp.py --preset smoke --tofu DIR --out DIR2

All through the real host, offline (``gru-unlearn``/``gru-plugin eval``):

1. MUSE- and WMDP-shaped data from TOFU (``gru_plugin.shaped_data``) in ``data/``;
2. a tiny random-init Llama; the *target* = the host's ``finetune/muse`` experiment
   on ``MUSE-<split>-Train/full`` (forget + retain articles), the *retain model* on
   ``.../retain``; the retain model's MUSE eval is privleak's reference;
3. MUSE: every method, base and ``+gru=default``, unlearns the forget articles
   through ``experiment=unlearn/muse/default``;
4. WMDP: RMU (its layer-restricted recipe, moved to the tiny model's layers),
   GradDiff and NPO, base and ``+gru``, unlearn the ``cyber`` corpora through
   ``experiment=unlearn/wmdp/default``; cyber's forget and retain authors are News's,
   so they start from the News target;
5. measure: the host's MUSE eval (``eval=muse``) of every model, then
   ``gru-plugin report``. WMDP's own lm-eval tasks (wmdp_cyber, mmlu) need the
   hub; the MUSE-News eval asks about the same authors, so it stands in here.

Every stage is skipped when its output exists; ``--jobs`` runs host processes side
by side (one torch thread each); host logs go to ``logs/``.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tofu_reproduction import VARIANTS, Pipeline, rmu_layers, run_label

from gru_plugin.cli import find_host
from gru_plugin.shaped_data import make

WITHOUT_RMU_ARGS = [
    "~trainer.method_args.steering_coeff",
    "~trainer.method_args.module_regex",
    "~trainer.method_args.trainable_params_regex",
    "trainer.method_args.retain_loss_type=NLL",
]
"""The WMDP recipe's ``method_args`` are RMU's: another method gets its own
arguments back (its ``__init__`` refuses ``steering_coeff``) and the NLL retain loss
for RMU's EMBED_DIFF."""


@dataclass(frozen=True)
class Scale:
    """Everything that sets the run's size; written to ``out/scale.json``."""

    hidden: int = 128
    layers: int = 4
    vocab_size: int = 1024
    # Tokens per training chunk (the host's MUSE: 2048, WMDP: 512). A tiny model
    # knows no position it never trained on: verbmem's prompt + 128 generated tokens
    # must fit.
    chunk: int = 512
    finetune_epochs: int = 80
    finetune_lr: float = 3e-3
    finetune_steps: int | None = None
    unlearn_epochs: int = 5
    unlearn_batch: int = 2
    unlearn_grad_accum: int = 2
    unlearn_lr: float = 1e-3
    unlearn_steps: int | None = None
    muse_splits: tuple[str, ...] = ("News",)
    muse_methods: tuple[str, ...] = ("GradAscent", "GradDiff", "NPO", "SimNPO", "RMU")
    wmdp_methods: tuple[str, ...] = ("RMU", "GradDiff", "NPO")
    variants: tuple[str, ...] = ("base", "gru")
    seeds: tuple[int, ...] = (0, 1)
    device: str = "cpu"  # the TOFU pipeline's plumbing adds --cpu for it


PRESETS = {
    "full": Scale(),
    # Every stage at toy size, for CI.
    "smoke": Scale(
        hidden=32,
        layers=2,
        vocab_size=512,
        finetune_steps=8,
        unlearn_steps=4,
        muse_methods=("NPO",),
        wmdp_methods=("RMU",),
        seeds=(0,),
    ),
}


class ShapedRuns(Pipeline):
    """The TOFU pipeline's plumbing (host processes, model and budget overrides)
    with MUSE's and WMDP's experiments."""

    def __init__(self, host: Path, tofu: Path, out: Path, scale: Scale):
        super().__init__(host, out / "data", out, scale)
        self.tofu = tofu

    def chunked(self, *nodes: str) -> list[str]:
        return [f"data.{node}.args.max_length={self.scale.chunk}" for node in nodes]

    def finetune_muse(self, split: str, subset: str, tiny: Path) -> Path:
        """The host's MUSE finetune experiment on ``MUSE-<split>-Train/<subset>``."""
        name = "target" if subset == "full" else "retain"
        model = self.out / "models" / f"{split}_{name}"
        if not (model / "model.safetensors").exists():
            scale = self.scale
            self.host_run(
                f"finetune_{split}_{name}",
                ["gru-unlearn", "--config-name=train.yaml"],
                "experiment=finetune/muse/default",
                f"data_split={split}",
                f"data_sub_set={subset}",
                f"task_name={split}_{name}",
                *self.model(tiny),
                *self.chunked("train.MUSE_train"),
                f"trainer.args.learning_rate={scale.finetune_lr}",
                *self.budget(scale.finetune_epochs, 8, scale.finetune_steps),
                "trainer.args.logging_steps=50",
                f"paths.output_dir={model}",
            )
        return model

    def evaluate_muse(
        self, name: str, split: str, model: Path, out: Path, reference: Path | None
    ) -> None:
        """The host's MUSE eval of ``model`` into ``out`` (skipped if done)."""
        if (out / "MUSE_SUMMARY.json").exists():
            return
        self.host_run(
            f"eval_{name}",
            ["gru-plugin", "eval"],
            "experiment=eval/muse/default",
            f"data_split={split}",
            f"task_name={name}",
            *self.model(model),
            f"retain_logs_path={reference or 'null'}",
            f"paths.output_dir={out}",
        )

    def unlearn_shaped(
        self,
        benchmark: str,
        split: str,
        job: tuple[str, str, int],
        target: Path,
        reference: Path,
    ) -> Path:
        """One unlearning run of the host's ``unlearn/<benchmark>`` experiment.

        WMDP's recipe evaluates during training (``eval_strategy: steps``, every
        half run) with lm-eval, which needs the hub; the MUSE-News eval, which asks
        about the same authors, takes its place there (``checkpoint-<S>/evals``).
        """
        method, variant, seed = job
        label = run_label(method, variant)
        run_dir = self.out / "unlearn" / benchmark / split / label / f"seed{seed}"
        if (run_dir / "model.safetensors").exists():
            return run_dir
        scale = self.scale
        if benchmark == "muse":
            data = [f"data_split={split}", *self.chunked("forget.MUSE_forget")]
            data += self.chunked("retain.MUSE_retain")
        else:
            data = [f"data_split={split}", *self.chunked("forget.WMDP_forget")]
            data += self.chunked("retain.WMDP_retain")
            data += [
                "eval=muse",
                "~eval.lm_eval",  # the recipe's task list, left without its handler
                f"eval.muse.retain_logs_path={reference}",
                "trainer.args.eval_strategy=steps",
                "trainer.args.eval_steps=0.5",
            ]
        self.host_run(
            f"unlearn_{benchmark}_{split}_{label}_seed{seed}",
            ["gru-unlearn", "--config-name=unlearn.yaml"],
            f"experiment=unlearn/{benchmark}/default",
            f"trainer={method}",
            *VARIANTS[variant],
            f"task_name={label}_seed{seed}",
            *self.model(target),
            *data,
            f"trainer.args.learning_rate={scale.unlearn_lr}",
            "trainer.args.lr_scheduler_type=constant",
            *self.budget(
                scale.unlearn_epochs,
                scale.unlearn_batch,
                None if benchmark == "wmdp" else scale.unlearn_steps,
                scale.unlearn_grad_accum,
            ),
            # WMDP's recipe sets max_steps: 80; the budget is ours (-1: epochs).
            *(
                [f"trainer.args.max_steps={scale.unlearn_steps or -1}"]
                if benchmark == "wmdp"
                else []
            ),
            f"trainer.args.seed={seed}",
            "trainer.args.logging_steps=1",
            *(rmu_layers(scale.layers, benchmark == "wmdp") if method == "RMU" else []),
            *(WITHOUT_RMU_ARGS if benchmark == "wmdp" and method != "RMU" else []),
            f"paths.output_dir={run_dir}",
        )
        return run_dir

    def jobs(self, methods: tuple[str, ...]) -> list[tuple[str, str, int]]:
        scale = self.scale
        return [
            (method, variant, seed)
            for seed in scale.seeds
            for method in methods
            for variant in scale.variants
        ]

    def run(self, jobs: int) -> None:
        from gru_plugin.tiny_model import make_tiny_model

        scale = self.scale
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "scale.json").write_text(json.dumps(asdict(scale), indent=2))
        if not (self.data / "wmdp-corpora").exists():
            make(self.tofu, self.data)
        tiny = self.out / "models" / "tiny"
        if not (tiny / "model.safetensors").exists():
            make_tiny_model(
                tiny, self.tofu, scale.vocab_size, scale.hidden, scale.layers
            )
        evals = self.out / "evals"
        with ThreadPoolExecutor(jobs) as pool:
            models = {
                (split, subset): pool.submit(self.finetune_muse, split, subset, tiny)
                for split in scale.muse_splits
                for subset in ("full", "retain")
            }
            models = {key: future.result() for key, future in models.items()}

            def reference(split: str) -> Path:
                out = self.out / "reference" / split
                self.evaluate_muse(
                    f"{split}_reference", split, models[split, "retain"], out, None
                )
                return out / "MUSE_EVAL.json"

            references = {split: reference(split) for split in scale.muse_splits}

            def unlearn_and_evaluate(benchmark, split, eval_split, job) -> None:
                target = models[eval_split, "full"]
                reference = references[eval_split]
                run_dir = self.unlearn_shaped(benchmark, split, job, target, reference)
                out = evals / run_dir.relative_to(self.out / "unlearn")
                name = "_".join(out.relative_to(evals).parts)
                self.evaluate_muse(name, eval_split, run_dir, out, reference)

            work = []
            for split in scale.muse_splits:
                for subset, role in (("full", "target"), ("retain", "retain")):
                    out = evals / "muse" / split / role
                    work.append(
                        pool.submit(
                            self.evaluate_muse,
                            f"{split}_{role}",
                            split,
                            models[split, subset],
                            out,
                            references[split],
                        )
                    )
                work += [
                    pool.submit(unlearn_and_evaluate, "muse", split, split, job)
                    for job in self.jobs(scale.muse_methods)
                ]
            if "News" in scale.muse_splits:
                work += [
                    pool.submit(unlearn_and_evaluate, "wmdp", "cyber", "News", job)
                    for job in self.jobs(scale.wmdp_methods)
                ]
            for future in work:
                future.result()
        from gru_plugin.report import report

        report([evals, self.out / "unlearn"], self.out / "report")
        print((self.out / "report" / "table.md").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--tofu", type=Path, required=True, help="TOFU json files")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--host", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="host processes at once")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    parser.add_argument(
        "--muse-splits", nargs="+", choices=("News", "Books"), help="default: News"
    )
    args = parser.parse_args(argv)
    scale = PRESETS[args.preset]
    if args.seeds:
        scale = replace(scale, seeds=tuple(args.seeds))
    if args.muse_splits:
        scale = replace(scale, muse_splits=tuple(args.muse_splits))
    host = find_host(str(args.host) if args.host else None)
    started = time.monotonic()
    ShapedRuns(host, args.tofu.resolve(), args.out.resolve(), scale).run(args.jobs)
    print(f"pipeline: {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
