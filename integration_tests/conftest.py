"""Fixtures for the host integration tests; all skip when the host is missing."""

from __future__ import annotations

import os
import sys
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


@pytest.fixture(scope="session")
def run_host(tiny_model, tmp_path_factory):
    """Run ``gru-unlearn`` with the CPU overrides plus ``overrides``; cached."""
    cache: dict[tuple[str, ...], Run] = {}
    root = tmp_path_factory.mktemp("runs")

    def run(
        *overrides: str,
        launcher: Path | None = None,
        host: Path = HOST,
        executable: str = GRU_UNLEARN,
    ) -> Run:
        """Run through ``gru-unlearn``, or a ``launcher`` script that ends in it;
        ``host`` and the ``executable`` of another environment run another host."""
        key = (*overrides, str(launcher), str(host), executable)
        if key in cache:
            return cache[key]
        out = root / f"run{len(cache)}"
        command = [
            *([sys.executable, str(launcher)] if launcher else [executable]),
            f"--host={host}",
            f"--data-dir={TOFU}",
            *([] if has_experiment(overrides) else DEFAULT_EXPERIMENT),
            *CPU_RUN,
            f"model.model_args.pretrained_model_name_or_path={tiny_model}",
            f"model.tokenizer_args.pretrained_model_name_or_path={tiny_model}",
            f"task_name={out.name}",
            f"paths.output_dir={out}",
            *overrides,
        ]
        env = {**os.environ, **OFFLINE_ENV}
        done = run_processes(command, cwd=root, env=env, timeout=600)
        assert done.returncode == 0, (
            f"host run failed ({' '.join(overrides)}):\n{done.stderr[-2500:]}"
        )
        cache[key] = Run(out, done.stdout + done.stderr)
        return cache[key]

    return run
