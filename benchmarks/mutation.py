"""Mutation score of the core math and bookkeeping, by mutmut (not run in CI).

    python benchmarks/mutation.py [--max-children N] [--resume] [--min-score PCT]

Runs ``mutmut run`` as ``[tool.mutmut]`` in pyproject.toml configures it (the files
that mutate, the fast unit tests that judge them), with one test process unless
``--max-children`` says otherwise; then reads mutmut's own results (``mutmut
results``, ``mutmut show``) and prints a table per module (mutants, killed,
survived, timeout, score) and every mutant no test caught, with its diff. The score
counts a timeout as caught: the tests did not pass. Exits 1 when a module scores
below ``--min-score``. docs/mutation.md holds the last run's results and the reason
each remaining survivor stays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAUGHT = ("killed", "timeout")
"""mutmut's statuses for a mutant that made the tests fail."""

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Each test process on one core: --max-children is then the number of cores used."""


def mutmut_command() -> str:
    """The mutmut of this interpreter's environment (the console script, which mutmut
    asks for instead of ``python -m mutmut``)."""
    beside = Path(sys.executable).parent / "mutmut"
    found = str(beside) if beside.is_file() else shutil.which("mutmut")
    if found is None:
        raise SystemExit("mutmut is not installed here: pip install mutmut (3.x)")
    return found


def mutated_modules() -> list[str]:
    """The dotted names of the files ``[tool.mutmut] only_mutate`` lists."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [
        path.removesuffix(".py").replace("/", ".") for path in config["only_mutate"]
    ]


def module_of(mutant: str, modules: list[str]) -> str:
    """The module a mutant name (``<module>.<function>__mutmut_<n>``) belongs to."""
    owners = [module for module in modules if mutant.startswith(f"{module}.")]
    return max(owners, key=len)


def read_results(mutmut: str) -> dict[str, str]:
    """Every mutant's status, from ``mutmut results --all true``."""
    listing = subprocess.run(
        [mutmut, "results", "--all", "true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    results = {}
    for line in listing.splitlines():
        name, separator, status = line.strip().rpartition(": ")
        if separator and "__mutmut_" in name:
            results[name] = status
    return results


def score_table(
    results: dict[str, str], modules: list[str]
) -> tuple[str, dict[str, float]]:
    """The per-module table in Markdown, and each module's score in percent."""
    counts = {module: Counter() for module in modules}
    for name, status in results.items():
        counts[module_of(name, modules)][status] += 1
    counts["all"] = sum(counts.values(), Counter())
    header = "| module | mutants | killed | survived | timeout | other | score |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    scores = {}
    for module, count in counts.items():
        total = sum(count.values())
        other = total - sum(count[s] for s in ("killed", "survived", "timeout"))
        scores[module] = 100.0 * sum(count[s] for s in CAUGHT) / max(total, 1)
        lines.append(
            f"| {module} | {total} | {count['killed']} | {count['survived']} "
            f"| {count['timeout']} | {other} | {scores[module]:.1f} % |"
        )
    return "\n".join(lines), scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep mutants/ from an earlier run: only mutants without a result run",
    )
    parser.add_argument("--min-score", type=float, default=90.0)
    args = parser.parse_args(argv)
    mutmut, modules = mutmut_command(), mutated_modules()
    if not args.resume:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    started = time.monotonic()
    run = [mutmut, "run", "--max-children", str(args.max_children)]
    done = subprocess.run(run, cwd=ROOT, env={**os.environ, **ONE_THREAD})
    minutes = (time.monotonic() - started) / 60
    if done.returncode != 0:
        print(f"mutmut run failed (exit {done.returncode})", file=sys.stderr)
        return done.returncode
    results = read_results(mutmut)
    table, scores = score_table(results, modules)
    print(f"\nmutmut run: {len(results)} mutants in {minutes:.1f} min\n")
    print(table)
    escaped = sorted(name for name, status in results.items() if status not in CAUGHT)
    print(f"\n{len(escaped)} mutant(s) not caught:")
    for name in escaped:
        shown = subprocess.run(
            [mutmut, "show", name], cwd=ROOT, capture_output=True, text=True
        )
        print(f"\n## {name} ({results[name]})\n{shown.stdout.strip()}")
    low = [module for module, score in scores.items() if score < args.min_score]
    if low:
        print(f"\nbelow {args.min_score:.0f} %: {', '.join(low)}", file=sys.stderr)
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
