"""Step time and memory of ``+gru`` against the base method, side by side, one run.

    python benchmarks/step_time.py --data-dir ../shared/data/tofu --out runs/bench

For each of GradAscent, GradDiff, NPO, SimNPO and RMU the real host builds the
trainer (same tiny model, data, seed and batch sizes); base and ``+gru`` runs are
interleaved, each timing ``--steps`` optimizer steps after ``--warmup`` steps, and
the medians over ``--rounds`` rounds are compared. Memory is measured in a fresh
process per variant: the bytes allocated when the optimizer steps (glibc's malloc
count on CPU, which unlike RSS is exact; ``torch.cuda.max_memory_allocated`` on
GPU). Writes ``step_time.md`` and ``step_time.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tofu_reproduction import VARIANTS, rmu_layers

from gru_plugin.cli import CPU_OVERRIDES, OFFLINE_ENV
from gru_plugin.upstream import METHODS

CASES = [*METHODS, "RMU:host"]
# "M:host" is method M with gru.reference=host: for RMU that makes its own EMBED_DIFF
# retain loss the reference, so the fast path applies (the default nll reference
# needs an extra NLL pass next to EMBED_DIFF).
MODEL_SIZE = {"hidden": 256, "layers": 4}


def case_overrides(case: str, variant: str, layers: int) -> list[str]:
    """The method of ``case`` (``M`` or ``M:<gru.reference>``) with the variant's GRU
    settings; RMU steers the middle of the model's ``layers`` layers."""
    method, _, reference = case.partition(":")
    gru = VARIANTS[variant]
    return [
        f"trainer={method}",
        *gru,
        *([f"gru.reference={reference}"] if gru and reference else []),
        *(rmu_layers(layers, restricted=False) if method == "RMU" else []),
    ]


def overrides(case: str, variant: str, model: Path, device: str) -> list[str]:
    return [
        "experiment=unlearn/tofu/default",
        *case_overrides(case, variant, MODEL_SIZE["layers"]),
        "model=Llama-3.2-1B-Instruct",
        *CPU_OVERRIDES,
        f"model.model_args.pretrained_model_name_or_path={model}",
        f"model.tokenizer_args.pretrained_model_name_or_path={model}",
        "trainer.args.save_strategy=no",
        "trainer.args.per_device_train_batch_size=4",
        "trainer.args.gradient_accumulation_steps=2",
        "trainer.args.logging_steps=1000",
        "+trainer.args.disable_tqdm=true",
        f"+trainer.args.use_cpu={'true' if device == 'cpu' else 'false'}",
        "forget_split=forget10",
        "retain_split=retain90",
        "holdout_split=holdout10",
        "task_name=bench",
    ]


class Host:
    """The host's own builders, used in this process."""

    def __init__(self, root: Path, data_dir: Path):
        sys.path.insert(0, str(root / "src"))
        from trainer import TRAINER_REGISTRY

        from gru_plugin.host import register

        register(TRAINER_REGISTRY)
        self.root, self.data_dir = root, data_dir

    def config(self, args: list[str]):
        from hydra import compose, initialize_config_dir
        from hydra.core.hydra_config import HydraConfig

        from gru_plugin.local_data import local_data_overrides

        with initialize_config_dir(str(self.root / "configs"), version_base=None):
            cfg = compose("unlearn.yaml", overrides=args)
            local = local_data_overrides(cfg, self.data_dir)
            cfg = compose("unlearn.yaml", args + local, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    def trainer(self, args: list[str], output_dir: Path, max_steps: int):
        from data import get_collators, get_data
        from model import get_model
        from omegaconf import open_dict
        from trainer import load_trainer
        from trainer.utils import seed_everything

        cfg = self.config(args)
        with open_dict(cfg):
            cfg.trainer.args.output_dir = str(output_dir)
            cfg.trainer.args.max_steps = max_steps
        seed_everything(cfg.trainer.args.seed)
        model, tokenizer = get_model(cfg.model)
        data = get_data(
            cfg.data,
            mode="unlearn",
            tokenizer=tokenizer,
            template_args=cfg.model.template_args,
        )
        collator = get_collators(cfg.collator, tokenizer=tokenizer)
        # The next host (transformers >= 4.46) renamed the argument, as the Trainer.
        parameters = inspect.signature(load_trainer).parameters
        name = "processing_class" if "processing_class" in parameters else "tokenizer"
        trainer, _ = load_trainer(
            cfg.trainer,
            model,
            train_dataset=data["train"],
            data_collator=collator,
            template_args=cfg.model.template_args,
            **{name: tokenizer},
        )
        return trainer


def timed_run(host: Host, args: list[str], out: Path, warmup: int, steps: int) -> dict:
    """Median optimizer-step time after warm-up, and the time spent rectifying."""
    import torch
    from transformers import TrainerCallback

    ends: list[float] = []
    on_gpu = torch.cuda.is_available()
    sync = torch.cuda.synchronize if on_gpu else lambda: None
    # CPU: the main thread's CPU time (one torch thread, no loader workers), which
    # other processes on a shared machine do not inflate; GPU: synchronized wall time.
    clock = time.perf_counter if on_gpu else time.thread_time

    class StepClock(TrainerCallback):
        def on_step_end(self, *_, **__):
            sync()
            ends.append(clock())

    trainer = host.trainer(args, out, warmup + steps + 1)
    trainer.add_callback(StepClock())
    rectify_seconds = time_rectify(trainer, sync, clock)
    trainer.train()
    durations = [b - a for a, b in zip(ends, ends[1:], strict=False)][warmup:]
    step = statistics.median(durations)
    share = (
        statistics.median(rectify_seconds[warmup + 1 :]) / step
        if rectify_seconds
        else 0.0
    )
    return {"step": step, "rectify_share": share}


def time_rectify(trainer, sync, clock) -> list[float]:
    """Wrap a GRU trainer's rectification; the list its durations will fill."""
    seconds: list[float] = []
    if hasattr(trainer, "_rectify"):
        rectify = trainer._rectify

        def timed_rectify():
            sync()
            start = clock()
            rectify()
            sync()
            seconds.append(clock() - start)

        trainer._rectify = timed_rectify
    return seconds


def peak_memory(args: argparse.Namespace, method: str, variant: str) -> dict:
    """Peak memory while training (4 steps) in a fresh process, and param bytes."""
    command = [
        sys.executable,
        __file__,
        "--data-dir",
        str(args.data_dir),
        "--out",
        str(args.out),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--memory-child",
        method,
        variant,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_child(host: Host, args: argparse.Namespace, model: Path) -> None:
    """Print the bytes in use when the optimizer steps (grads, EMA, optimizer state)."""
    import torch
    from transformers import TrainerCallback

    method, variant = args.memory_child
    trainer = host.trainer(
        overrides(method, variant, model, args.device), args.out / "mem", 4
    )
    trainable = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
    samples: list[int] = []

    class MemoryProbe(TrainerCallback):
        def on_pre_optimizer_step(self, *_, **__):
            samples.append(bytes_in_use(args.device))

    trainer.add_callback(MemoryProbe())
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else max(samples)
    print(json.dumps({"peak": peak, "param_bytes": trainable}))


def bytes_in_use(device: str) -> int:
    """Allocated bytes: the CUDA allocator's, or glibc malloc's (exact, unlike RSS)."""
    if device == "cuda":
        import torch

        return torch.cuda.memory_allocated()

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                "fordblks keepcost"
            ).split()
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--host", default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--methods", nargs="+", default=CASES)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["gru", "gru:forget"],
        choices=[variant for variant in VARIANTS if variant != "base"],
        help="compared with base (gru:forget holds the method's retain term of g "
        "in a second buffer until the projection is done)",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-reps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.update(OFFLINE_ENV)

    import torch

    from gru_plugin.cli import find_host
    from gru_plugin.tiny_model import make_tiny_model

    torch.set_num_threads(args.threads)

    args.data_dir, args.out = args.data_dir.resolve(), args.out.resolve()
    model = args.out / "bench-llama"
    if not (model / "model.safetensors").exists():
        make_tiny_model(model, args.data_dir, **MODEL_SIZE)
    host = Host(find_host(args.host), args.data_dir)
    if args.memory_child:
        memory_child(host, args, model)
        return

    variants = ["base", *args.variants]
    times: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(args.rounds):
        for method in args.methods:
            for variant in variants:
                run = timed_run(
                    host,
                    overrides(method, variant, model, args.device),
                    args.out / "timing",
                    args.warmup,
                    args.steps,
                )
                times.setdefault((method, variant), []).append(run)
                print(f"round {round_index} {method} {variant}: {run['step']:.4f} s")

    rows = {}
    param_bytes = peak_memory(args, args.methods[0], "base")["param_bytes"]
    for method in args.methods:
        memory = {
            v: statistics.median(
                peak_memory(args, method, v)["peak"] for _ in range(args.memory_reps)
            )
            for v in variants
        }
        base = statistics.median(r["step"] for r in times[(method, "base")])
        for variant in args.variants:
            step = statistics.median(r["step"] for r in times[(method, variant)])
            rows[f"{method} {variant}"] = {
                "base_step_s": base,
                "gru_step_s": step,
                "ratio": step / base,
                "rectify_share": statistics.median(
                    r["rectify_share"] for r in times[(method, variant)]
                ),
                "extra_peak_bytes": memory[variant] - memory["base"],
                "param_bytes": param_bytes,
            }
    if "GradAscent gru" in rows and "GradDiff gru" in rows:
        rows["GradAscent gru"]["ratio_vs_graddiff"] = (
            rows["GradAscent gru"]["gru_step_s"] / rows["GradDiff gru"]["base_step_s"]
        )
    write_report(args.out, rows, args)


def write_report(out: Path, rows: dict, args: argparse.Namespace) -> None:
    (out / "step_time.json").write_text(json.dumps(rows, indent=2))
    lines = [
        f"device {args.device}; medians of {args.rounds} interleaved rounds × "
        f"{args.steps} steps after {args.warmup} warm-up steps, {args.threads} torch "
        "thread(s); step time = main-thread CPU time on CPU, synchronized wall time "
        "on GPU; extra memory = bytes allocated when the optimizer steps (CPU: "
        "malloc's count; GPU: max_memory_allocated), gru minus base, median of "
        f"{args.memory_reps} fresh process(es) per variant",
        "",
        "| method | variant | base step (s) | variant step (s) | ratio | "
        "vs GradDiff base | rectify share | extra memory / param bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        method, variant = name.split(" ")
        vs = row.get("ratio_vs_graddiff")
        lines.append(
            f"| {method} | {variant} | {row['base_step_s']:.4f} | "
            f"{row['gru_step_s']:.4f} | "
            f"{row['ratio']:.3f} | {'–' if vs is None else f'{vs:.3f}'} | "
            f"{row['rectify_share']:.2%} | "
            f"{row['extra_peak_bytes'] / row['param_bytes']:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "step_time.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
