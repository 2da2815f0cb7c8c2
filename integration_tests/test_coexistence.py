"""Another GRU in the host's registry, under the name open-unlearning pull request
#83 gives its trainer (``GRU``), survives our plugin and trains; ``+gru=default``
works beside it in the same host."""

from __future__ import annotations

import pytest
from host_runs import HOST
from test_host_methods import assert_gru_run

LAUNCHER = """
import sys
sys.path.insert(0, {src!r})
from trainer import TRAINER_REGISTRY
from trainer.unlearn.grad_diff import GradDiff
from gru_plugin.cli import gru_unlearn

class GRU(GradDiff):
    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        if not getattr(self, "announced", False):
            print("the foreign GRU trains", flush=True)
            self.announced = True
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, **kwargs
        )

TRAINER_REGISTRY["GRU"] = GRU
gru_unlearn()
"""


@pytest.fixture(scope="module")
def foreign_gru(tmp_path_factory) -> tuple[str, ...]:
    """A launcher registering a foreign ``GRU`` and its trainer config (like pull
    request #83's configs/trainer/GRU.yaml); returns the run's extra overrides."""
    root = tmp_path_factory.mktemp("foreign-gru")
    (root / "conf" / "trainer").mkdir(parents=True)
    (root / "conf" / "trainer" / "GRU.yaml").write_text(
        "defaults:\n  - GradDiff\n\nhandler: GRU\n"
    )
    (root / "launch.py").write_text(LAUNCHER.format(src=str(HOST / "src")))
    return f"hydra.searchpath=[file://{root / 'conf'}]", str(root / "launch.py")


def test_foreign_gru_entry_survives_and_trains(run_host, foreign_gru):
    searchpath, launcher = foreign_gru
    run = run_host(searchpath, "trainer=GRU", launcher=launcher)
    assert "the foreign GRU trains" in run.output
    assert "GRU Trainer loaded" in run.output
    assert run.gru_logs == []
    assert any("loss" in entry for entry in run.log_history)
    assert (run.out / "model.safetensors").is_file()


def test_plus_gru_beside_a_foreign_gru(run_host, foreign_gru):
    searchpath, launcher = foreign_gru
    run = run_host(searchpath, "trainer=GradDiff", "+gru=default", launcher=launcher)
    assert "the foreign GRU trains" not in run.output
    assert_gru_run(run)
