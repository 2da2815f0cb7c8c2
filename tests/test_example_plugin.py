"""The example strategy package in examples/ plugs in through its entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gru-normcap"

USE_IT = """
import torch
from gru_plugin import rectify_
from gru_plugin.plugins import available_strategies, make_strategy

assert "normcap" in available_strategies(), available_strategies()
g, r = [torch.tensor([-1.0, 0.0])], [torch.tensor([4.0, 0.0])]
# The projection would subtract 1.0 = |g|; the cap lets through 0.5 |g|.
stats = rectify_(g, r, make_strategy("normcap", {"cap": 0.5}))
print(stats.coef, g[0].tolist())
"""


def test_example_strategy_installs_and_caps_the_projection(tmp_path):
    source, target = tmp_path / "gru-normcap", tmp_path / "site"
    shutil.copytree(EXAMPLE, source)  # the build writes beside its sources
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", USE_IT], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["-0.125", "[-0.5,", "0.0]"]
