"""A trainer the host has never heard of, registered at run time, gets GRU too."""

from __future__ import annotations

import textwrap

from host_runs import HOST
from test_host_methods import assert_gru_run

LAUNCHER = """
import sys
sys.path.insert(0, {src!r})
from trainer import _register_trainer
from trainer.unlearn.grad_diff import GradDiff
from gru_plugin.cli import gru_unlearn

class HalfDiff(GradDiff):
    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        return 0.5 * super().compute_loss(
            model, inputs, return_outputs=return_outputs, **kwargs
        )

_register_trainer(HalfDiff)
gru_unlearn()
"""


def test_runtime_registered_trainer(run_host, tmp_path):
    conf = tmp_path / "conf" / "trainer"
    conf.mkdir(parents=True)
    (conf / "HalfDiff.yaml").write_text(
        textwrap.dedent(
            """
            defaults:
              - GradDiff
            handler: HalfDiff
            """
        )
    )
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(src=str(HOST / "src")))
    run = run_host(
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "trainer=HalfDiff",
        "+gru=default",
        launcher=launcher,
    )
    assert_gru_run(run)
