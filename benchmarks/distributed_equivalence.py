"""GRU on 2 processes against GRU on 1, for every engine, side by side, one run.

    python benchmarks/distributed_equivalence.py --out runs/dist
    python benchmarks/distributed_equivalence.py --out runs/dist --device cuda

Runs the toy trainers of ``tests/ddp_worker.py`` (a 2-layer Llama, plain SGD, 4
optimizer steps, the same global batches everywhere): 1 process with 2× the
gradient accumulation, then 2 processes under plain DDP, DeepSpeed ZeRO-1/2/3
(ZeRO-1/2 also with the optimizer offloaded to the CPU) and FSDP2, on both of GRU's
paths; an engine this environment cannot run gets a row saying why. Prints and
writes ``distributed_equivalence.md``: the largest relative difference of a final
weight, of a step's coefficient, whether both ranks applied the same coefficients,
and GRU's EMA per rank against the trainable size.
On CUDA with fewer GPUs than ranks, both ranks share ``cuda:0`` over gloo.
``--engines`` and ``--paths`` pick a subset (the GPU suite's CPU smoke).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from ddp_worker import ENGINES, launch, max_weight_difference, why_not  # noqa: E402

PATHS = {
    "fast path (GradDiff)": (["--method=GradDiff"], 2),
    "extra pass (GradAscent)": (["--method=GradAscent", "--no-fast-path"], 4),
}


def relative_differences(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b, strict=True))


def compare(one: Path, two: Path, single: dict, ranks: list[dict]) -> list[str]:
    weight_error = max_weight_difference(one, two)
    coefs = [[step["coef"] for step in r["history"]] for r in (single, *ranks)]
    fired = [c for c in coefs[0] if c != 0.0]
    coef_error = relative_differences(fired, [c for c in coefs[1] if c != 0.0])
    ema = "/".join(f"{r['ema_elements'] / r['trainable_elements']:.2f}" for r in ranks)
    return [
        f"{weight_error:.1e}",
        f"{coef_error:.1e} ({len(fired)}/{len(coefs[0])} fired)",
        "yes" if coefs[1] == coefs[2] else "**no**",
        ema,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES)
    )
    parser.add_argument(
        "--paths", nargs="+", choices=("fast", "extra"), default=("fast", "extra")
    )
    options = parser.parse_args()
    paths = {
        path: run for path, run in PATHS.items() if path.split()[0] in options.paths
    }
    skipped = {engine: why_not(engine, options.device) for engine in options.engines}
    skipped = {engine: why for engine, why in skipped.items() if why}
    one, two = {}, {}
    for path, (method, accumulation) in paths.items():
        folder = options.out / path.split()[0]
        one[path] = folder / "one", [f"--grad-accum={accumulation}", *method]
        for engine in [e for e in options.engines if e not in skipped]:
            flags = [f"--grad-accum={accumulation // 2}", *method, *ENGINES[engine]]
            two[path, engine] = folder / engine, flags
    # One launch per process count: starting the processes costs more than a run.
    singles = launch(1, options.device, one)
    ranks = launch(2, options.device, two)
    rows = []
    for (path, engine), (out, _) in two.items():
        (single,) = singles[path]
        comparison = compare(one[path][0], out, single, ranks[path, engine])
        rows.append([engine, path, *comparison])
        print(" | ".join(rows[-1]), flush=True)
    for engine, why in skipped.items():
        rows.append([engine, "–", f"not run: {why}", "–", "–", "–"])
    header = [
        "engine",
        "GRU path",
        "max rel. weight diff",
        "max rel. coef diff",
        "ranks' coefs identical",
        "EMA per rank / trainable",
    ]
    lines = [
        f"2 processes vs 1 process with the same global batches ({options.device}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    (options.out / "distributed_equivalence.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
