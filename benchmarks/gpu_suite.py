"""GRU on a real accelerator, one command, one markdown report (``gpu_suite.md``).

    python benchmarks/gpu_suite.py --tofu ../shared/data/tofu --out runs/gpu
    python benchmarks/gpu_suite.py --device cpu --tofu ../shared/data/tofu --out DIR

1. step time and peak memory, base against ``+gru=default``, for GradAscent,
   GradDiff, NPO, SimNPO and RMU (``gru.reference=nll`` and ``host``), built by the
   real host in this process on the MUSE recipe (raw-text chunks of 512 tokens, data
   shaped from TOFU) with a randomly initialised model of Llama-3.2-1B's shape in
   bf16; the rectification's share of the step;
2. what GRU adds per optimizer step in host↔device traffic, counted over one whole
   step with torch's profiler: host reads (``.item()``, ``bool()``, ``.tolist()``:
   each a synchronisation on a GPU), CUDA memcpys and synchronize calls, and tensor
   copies of at least 2^20 elements;
3. the distributed equivalence checks (``distributed_equivalence.py``: 2 ranks
   against 1; on one GPU both ranks share it over gloo);
4. one host run through ``src/train.py`` with ``+gru=default`` (sdpa attention).

``--device cpu`` runs the same at toy size (CI's smoke test, so the suite cannot
rot); its numbers say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from step_time import Host, bytes_in_use, case_overrides, time_rectify
from tofu_reproduction import MODEL, Pipeline, Scale

from gru_plugin.cli import CPU_OVERRIDES, OFFLINE_ENV, find_host

CASES = ("GradAscent", "GradDiff", "NPO", "SimNPO", "RMU", "RMU:host")
"""``M:host`` is method M with ``gru.reference=host`` (RMU's own retain loss)."""
LARGE_COPY = 2**20
"""Elements from which a tensor copy counts as large (a gradient's order)."""
GPU_OVERRIDES = [
    # The host's GPU settings without flash-attn or bitsandbytes.
    "model.model_args.attn_implementation=sdpa",
    "model.model_args.torch_dtype=bfloat16",
    "trainer.args.bf16=true",
    "trainer.args.optim=adamw_torch",
    "++trainer.args.warmup_epochs=0",
    "trainer.args.report_to=none",
    "trainer.args.eval_on_start=false",
    "trainer.args.eval_strategy=no",
    "trainer.args.do_eval=false",
]


@dataclass(frozen=True)
class Size:
    """The model and the budget of one suite run; written into the report."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int  # the embedding's rows; the tokenizer uses the first 1024
    chunk: int = 512
    batch: int = 4
    grad_accum: int = 2
    warmup: int = 2
    steps: int = 4
    dist_engines: tuple[str, ...] = (
        "DDP",
        "ZeRO-1",
        "ZeRO-2",
        "ZeRO-3",
        "ZeRO-1-offload",
        "ZeRO-2-offload",
        "ZeRO-3-offload",
        "FSDP2",
    )
    dist_paths: tuple[str, ...] = ("fast", "extra")


SIZES = {
    # Llama-3.2-1B's shape (1.24 B parameters, tied embeddings).
    "cuda": Size(
        hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256
    ),
    "cpu": Size(
        hidden=64,
        intermediate=128,
        layers=2,
        heads=4,
        kv_heads=2,
        vocab=1024,
        chunk=128,
        batch=2,
        warmup=1,
        steps=2,
        dist_engines=("ZeRO-2",),
        dist_paths=("fast",),
    ),
}


def build_model(out: Path, tofu: Path, size: Size, device: str) -> Path:
    """A random-init Llama of ``size`` with a BPE tokenizer trained on TOFU."""
    import torch

    from gru_plugin.tiny_model import build_model, build_tokenizer, iter_texts

    if (out / "model.safetensors").exists():
        return out
    tokenizer = build_tokenizer(list(iter_texts(tofu)), 1024)
    model = build_model(
        tokenizer,
        size.hidden,
        size.layers,
        seed=0,
        intermediate=size.intermediate,
        heads=size.heads,
        kv_heads=size.kv_heads,
        vocab_size=size.vocab,
        device=device,
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    # One file (2.5 GB at Llama-3.2-1B's shape), so the check above sees it.
    model.to(dtype).save_pretrained(out, max_shard_size="10GB")
    tokenizer.save_pretrained(out)
    return out


def overrides(case: str, variant: str, model: Path, size: Size, device: str):
    chunk = f"args.max_length={size.chunk}"
    return [
        "experiment=unlearn/muse/default",
        "data_split=News",
        f"data.forget.MUSE_forget.{chunk}",
        f"data.retain.MUSE_retain.{chunk}",
        *case_overrides(case, variant, size.layers),
        MODEL,
        *(CPU_OVERRIDES if device == "cpu" else GPU_OVERRIDES),
        f"+trainer.args.use_cpu={str(device == 'cpu').lower()}",
        f"model.model_args.pretrained_model_name_or_path={model}",
        f"model.tokenizer_args.pretrained_model_name_or_path={model}",
        "trainer.args.save_strategy=no",
        "trainer.args.lr_scheduler_type=constant",
        f"trainer.args.per_device_train_batch_size={size.batch}",
        f"trainer.args.gradient_accumulation_steps={size.grad_accum}",
        "trainer.args.logging_steps=1000",
        "+trainer.args.disable_tqdm=true",
        "task_name=gpu_suite",
    ]


class ListReads:
    """Counts ``Tensor.tolist`` calls: a read to the host the profiler shows on a GPU
    (as a memcpy) but not on a CPU, unlike ``.item()``."""

    def __init__(self) -> None:
        self.calls = 0
        self._original = None

    def start(self) -> None:
        import torch

        original = self._original = torch.Tensor.tolist

        def counted(tensor, *args, **kwargs):
            self.calls += 1
            return original(tensor, *args, **kwargs)

        torch.Tensor.tolist = counted

    def stop(self) -> None:
        import torch

        torch.Tensor.tolist = self._original


def profile_counts(profiler, list_reads: int) -> dict[str, int]:
    """Host reads, CUDA memcpys and synchronize calls, large copies in one step."""
    counts = {"reads": list_reads, "memcpy": 0, "sync_calls": 0, "large_copies": 0}
    for event in profiler.events():
        name = event.name
        if name == "aten::_local_scalar_dense":  # .item(), bool(), float()
            counts["reads"] += 1
        elif name.startswith("Memcpy DtoH") or name.startswith("Memcpy HtoD"):
            counts["memcpy"] += 1
        elif name in ("cudaStreamSynchronize", "cudaDeviceSynchronize"):
            counts["sync_calls"] += 1
        elif name in ("aten::copy_", "aten::clone", "aten::_to_copy"):
            shape = event.input_shapes[0] if event.input_shapes else []
            if shape and math.prod(shape) >= LARGE_COPY:
                counts["large_copies"] += 1
    return counts


def measure(host: Host, args: list[str], out: Path, size: Size, device: str) -> dict:
    """Step time (median over ``size.steps`` after warm-up), the rectification's
    share, the peak memory above the start, and the profiled last step's counts."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    on_gpu = device == "cuda"
    sync = torch.cuda.synchronize if on_gpu else lambda: None
    clock = time.perf_counter if on_gpu else time.thread_time
    profiled_step = size.warmup + size.steps
    ends: list[float] = []
    memory: list[int] = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    profiler = profile(activities=activities, record_shapes=True)
    list_reads = ListReads()

    class Probe(TrainerCallback):
        def on_step_begin(self, _args, state, *__, **___):
            if state.global_step == profiled_step:
                sync()
                profiler.start()
                list_reads.start()

        def on_pre_optimizer_step(self, *_, **__):
            memory.append(bytes_in_use(device))

        def on_step_end(self, _args, state, *__, **___):
            sync()
            ends.append(clock())
            if state.global_step == profiled_step + 1:
                list_reads.stop()
                profiler.stop()

    trainer = host.trainer(args, out, profiled_step + 1)
    trainer.add_callback(Probe())
    rectify_seconds = time_rectify(trainer, sync, clock)
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start_bytes = bytes_in_use(device)
    trainer.train()
    peak = torch.cuda.max_memory_allocated() if on_gpu else max(memory)
    durations = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    step = statistics.median(durations[size.warmup - 1 : profiled_step - 1])
    rectify_share = (
        statistics.median(rectify_seconds[size.warmup : profiled_step]) / step
        if rectify_seconds
        else 0.0
    )
    fired = [stats.fired for stats in getattr(trainer, "gru_history", [])]
    param_bytes = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
    result = {
        "step_s": step,
        "rectify_share": rectify_share,
        "peak_above_start": peak - start_bytes,
        "param_bytes": param_bytes,
        "fired": f"{sum(fired)}/{len(fired)}" if fired else "–",
        **profile_counts(profiler, list_reads.calls),
    }
    del trainer
    gc.collect()
    return result


def compare_steps(host: Host, model: Path, out: Path, size: Size, device: str):
    """Every case's base and gru measurements, interleaved."""
    results = {}
    for case in CASES:
        results[case] = {
            variant: measure(
                host, overrides(case, variant, model, size, device), out, size, device
            )
            for variant in ("base", "gru")
        }
        print(" | ".join(table_row(case, results[case])), flush=True)
    return results


def table_row(case: str, runs: dict[str, dict]) -> list[str]:
    base, gru = runs["base"], runs["gru"]
    extra = gru["peak_above_start"] - base["peak_above_start"]
    return [
        case,
        f"{base['step_s']:.3f}",
        f"{gru['step_s']:.3f}",
        f"{gru['step_s'] / base['step_s']:.3f}",
        f"{gru['rectify_share']:.1%}",
        f"{extra / base['param_bytes']:.2f}",
        gru["fired"],
        *(
            f"{base[key]} → {gru[key]} ({gru[key] - base[key]:+d})"
            for key in ("reads", "memcpy", "sync_calls", "large_copies")
        ),
    ]


def distributed(out: Path, size: Size, device: str) -> str:
    command = [
        sys.executable,
        str(Path(__file__).with_name("distributed_equivalence.py")),
        f"--out={out}",
        f"--device={device}",
        "--engines",
        *size.dist_engines,
        "--paths",
        *size.dist_paths,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"distributed checks failed:\n{done.stderr[-3000:]}")
    return (out / "distributed_equivalence.md").read_text()


def host_run(host: Path, tofu: Path, model: Path, out: Path, device: str) -> dict:
    """``+gru=default`` through the host's ``src/train.py`` (``gru-unlearn``)."""
    pipeline = Pipeline(host, tofu, out, Scale(device=device))
    run_dir = out / "run"
    started = time.monotonic()
    pipeline.host_run(
        "host_run",
        ["gru-unlearn", "--config-name=unlearn.yaml"],
        "experiment=unlearn/tofu/default",
        "trainer=GradDiff",
        "+gru=default",
        *Pipeline.model(model),
        *([] if device == "cpu" else GPU_OVERRIDES),
        "forget_split=forget01",
        "retain_split=retain99",
        "holdout_split=holdout01",
        *Pipeline.budget(None, 4, 4, 2),
        "trainer.args.logging_steps=1",
        "trainer.args.save_strategy=no",
        f"paths.output_dir={run_dir}",
    )
    seconds = time.monotonic() - started
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if "gru/fired" in entry]
    return {
        "steps_logged": len(logged),
        "fired": sum(entry["gru/fired"] for entry in logged),
        "seconds": seconds,
        "log": str(out / "logs" / "host_run.log"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tofu", type=Path, required=True, help="TOFU json files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--host", default=None)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args(argv)
    os.environ.update(OFFLINE_ENV)

    import torch

    from gru_plugin.shaped_data import make

    if args.device == "cpu":
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU here; --device cpu runs the smoke size")
    size = SIZES[args.device]
    tofu, out = args.tofu.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    shaped = out / "data"
    if not (shaped / "MUSE-News").exists():
        make(tofu, shaped)
    model = build_model(out / "model", tofu, size, args.device)
    root = find_host(args.host)
    host = Host(root, shaped)
    steps = compare_steps(host, model, out / "steps", size, args.device)
    timings = time.monotonic() - started
    equivalence = distributed(out / "dist", size, args.device)
    run = host_run(root, tofu, model, out / "host", args.device)
    results = {"size": asdict(size), "steps": steps, "host_run": run}
    (out / "gpu_suite.json").write_text(json.dumps(results, indent=2))
    write_report(out, args.device, size, results, equivalence, timings)
    print(f"suite: {(time.monotonic() - started) / 60:.1f} min")


def write_report(
    out: Path,
    device: str,
    size: Size,
    results: dict,
    equivalence: str,
    timings: float,
) -> None:
    import torch

    run = results["host_run"]
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (1 thread)"
    header = [
        "method",
        "base step (s)",
        "gru step (s)",
        "ratio",
        "rectify share",
        "extra peak / param bytes",
        "GRU fired",
        "host reads",
        "memcpy H↔D",
        "sync calls",
        f"copies ≥ 2^{LARGE_COPY.bit_length() - 1}",
    ]
    lines = [
        "# GPU suite",
        "",
        f"{name}; torch {torch.__version__}; model {json.dumps(asdict(size))}.",
        "",
        "## Step time, memory, host↔device traffic: base vs `+gru=default`",
        "",
        f"MUSE recipe, chunks of {size.chunk} tokens, batch {size.batch} × "
        f"{size.grad_accum} accumulation; step = median of {size.steps} steps after "
        f"{size.warmup} warm-up (synchronized wall time on GPU, thread CPU time on "
        "CPU); extra peak = (peak − allocated at start) of gru minus base; the "
        "counts are over one whole optimizer step, base → gru (added), from torch's "
        f"profiler ({timings / 60:.1f} min in all).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(
            "| " + " | ".join(table_row(case, runs)) + " |"
            for case, runs in results["steps"].items()
        ),
        "",
        "## 2 ranks against 1",
        "",
        equivalence.strip(),
        "",
        "## One host run",
        "",
        f"GradDiff `+gru=default` through `src/train.py`, forget01, 4 steps of 2 "
        f"micro-batches: {run['steps_logged']} steps logged GRU's statistics, GRU "
        f"fired at {run['fired']:g}; {run['seconds']:.0f} s with start-up (log: "
        f"`{run['log']}`).",
        "",
    ]
    (out / "gpu_suite.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
