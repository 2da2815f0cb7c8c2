"""Fixtures for the host integration tests; all skip when the host is missing."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from host_runs import (
    CPU_RUN,
    DEFAULT_EXPERIMENT,
    GRU_UNLEARN,
    HOST,
    TOFU,
    Run,
    has_experiment,
    host_missing_reason,
)

from gru_plugin.cli import OFFLINE_ENV
from gru_plugin.testing import run_processes


def pytest_collection_modifyitems(config, items):
    reason = host_missing_reason()
    if reason:
        marker = pytest.mark.skip(reason=reason)
        for item in items:
            if "integration_tests" in str(item.fspath):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from gru_plugin.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), TOFU)


class HostRunner:
    """Runs ``gru-unlearn`` on the tiny model with the CPU overrides plus a run's
    overrides, and caches each run.

    Plain runs of the host under test (no launcher, this environment) go through
    ``host_worker.py``: on a miss, every run the requesting test module lists in
    its ``HOST_RUNS`` that has not run yet goes with it, in one process.
    """

    def __init__(self, model: Path, root: Path):
        self.model, self.root = model, root
        self.cache: dict[tuple[str, ...], Run] = {}
        self.count = 0  # runs
        self.processes = 0  # the launchers and workers they took

    def command_options(
        self, overrides: Sequence[str], host: Path
    ) -> tuple[Path, list[str]]:
        """A new output folder, and ``gru-unlearn``'s options for a run into it."""
        self.count += 1
        out = self.root / f"run{self.count}"
        return out, [
            f"--host={host}",
            f"--data-dir={TOFU}",
            *([] if has_experiment(overrides) else DEFAULT_EXPERIMENT),
            *CPU_RUN,
            f"model.model_args.pretrained_model_name_or_path={self.model}",
            f"model.tokenizer_args.pretrained_model_name_or_path={self.model}",
            f"task_name={out.name}",
            f"paths.output_dir={out}",
            *overrides,
        ]

    def run(
        self,
        *overrides: str,
        launcher: Path | None = None,
        host: Path = HOST,
        executable: str = GRU_UNLEARN,
        batch: Sequence[Sequence[str]] = (),
    ) -> Run:
        """Run through ``gru-unlearn``, or a ``launcher`` script that ends in it;
        ``host`` and the ``executable`` of another environment run another host."""
        key = (*overrides, str(launcher), str(host), executable)
        if key not in self.cache:
            if launcher is None and host == HOST and executable == GRU_UNLEARN:
                self.run_together([*batch, overrides])
            else:
                self.cache[key] = self.run_alone(overrides, launcher, host, executable)
        run = self.cache[key]
        assert not run.failed, (
            f"host run failed ({' '.join(overrides)}):\n" + (run.output[-2500:])
        )
        return run

    def run_alone(self, overrides, launcher, host, executable) -> Run:
        out, options = self.command_options(overrides, host)
        self.processes += 1
        command = [sys.executable, str(launcher)] if launcher else [executable]
        done = run_processes(
            command + options, cwd=self.root, env=self.env(), timeout=600
        )
        return Run(out, done.stdout + done.stderr, failed=done.returncode != 0)

    def run_together(self, runs: Sequence[Sequence[str]]) -> None:
        """The runs not yet cached, in one ``host_worker`` process."""
        pending, seen = [], set()
        for overrides in map(tuple, runs):
            key = (*overrides, "None", str(HOST), GRU_UNLEARN)
            if key not in self.cache and key not in seen:
                seen.add(key)
                pending.append((key, *self.command_options(overrides, HOST)))
        plan = [{"argv": options, "log": f"{out}.log"} for _, out, options in pending]
        plan_file = self.root / f"plan{self.count}.json"
        plan_file.write_text(json.dumps(plan))
        worker = Path(__file__).with_name("host_worker.py")
        self.processes += 1
        done = run_processes(
            [sys.executable, str(worker), str(plan_file)],
            cwd=self.root,
            env=self.env(),
            timeout=120 + 120 * len(pending),
        )
        for key, out, _ in pending:
            log = out.with_suffix(".log")
            output = log.read_text() if log.is_file() else ""
            ok = out.with_suffix(".ok").is_file()
            if not ok and done.returncode != 0:
                output += f"\nhost_worker exited {done.returncode}:\n{done.stderr}"
            self.cache[key] = Run(out, output, failed=not ok)

    @staticmethod
    def env() -> dict[str, str]:
        return {**os.environ, **OFFLINE_ENV}


RUNNERS: list[HostRunner] = []


@pytest.fixture(scope="session")
def host_runner(tiny_model, tmp_path_factory) -> HostRunner:
    RUNNERS.append(HostRunner(tiny_model, tmp_path_factory.mktemp("runs")))
    return RUNNERS[-1]


def pytest_terminal_summary(terminalreporter) -> None:
    """How many host runs the session made, and in how many launches."""
    for runner in RUNNERS:
        terminalreporter.write_line(
            f"run_host: {runner.count} host runs in {runner.processes} launches"
        )


@pytest.fixture
def run_host(host_runner, request):
    """``HostRunner.run``, batching the plain runs the test's module lists in
    ``HOST_RUNS`` (a list of override tuples) into one process."""
    batch = getattr(request.module, "HOST_RUNS", ())
    return functools.partial(host_runner.run, batch=batch)
