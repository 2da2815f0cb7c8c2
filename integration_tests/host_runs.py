"""Running the real open-unlearning host on a tiny model, offline, on CPU.

Three host versions are supported, each a checkout found by its own variable
(``HOST_VERSIONS``); ``GRU_HOST`` names the one these tests run against (default
``main``). TOFU comes from ``GRU_TOFU_DATA`` (default ``../shared/data/tofu`` beside
the repo). When the host or the data is missing every test here is skipped with
that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from gru_plugin.cli import CPU_OVERRIDES

REPO = Path(__file__).resolve().parents[1]
TOFU = Path(os.environ.get("GRU_TOFU_DATA", REPO.parent / "shared" / "data" / "tofu"))


@dataclass(frozen=True)
class HostVersion:
    """One open-unlearning version CI tests: its checkout, and the venv that
    ``bash .ci/install <install_env>`` makes for it."""

    name: str
    what: str
    root_variable: str
    root_default: str
    install_env: str

    @property
    def root(self) -> Path:
        return Path(os.environ.get(self.root_variable, self.root_default)).expanduser()

    @property
    def venv(self) -> Path:
        """``GRU_<ENV>_VENV``, or where ``.ci/install <env>`` puts it by default."""
        variable = f"GRU_{self.install_env.upper().replace('-', '_')}_VENV"
        default = (
            ".venv" if self.install_env == "host-main" else f".venv-{self.install_env}"
        )
        return Path(os.environ.get(variable, REPO / default))

    @property
    def gru_unlearn(self) -> str:
        return str(self.venv / "bin" / "gru-unlearn")

    def missing_reason(self) -> str | None:
        """Why this host cannot run here (None: it can)."""
        if not (self.root / "src" / "train.py").is_file():
            return (
                f"open-unlearning {self.what} not found at {self.root}: set "
                f"{self.root_variable} to a checkout of it"
            )
        return None


HOST_VERSIONS = {
    host.name: host
    for host in (
        HostVersion(
            "main",
            "main (4ad738a, transformers 4.51.3)",
            "OPEN_UNLEARNING_ROOT",
            "~/open-unlearning",
            "host-main",
        ),
        HostVersion(
            "pr191",
            "pull request #191 (c3301d8, transformers 5.5.4)",
            "OPEN_UNLEARNING_PR191_ROOT",
            "~/open-unlearning-pr191",
            "host-pr191",
        ),
        HostVersion(
            "oldest",
            "d3d7cf9 (the oldest supported, transformers 4.45.1)",
            "OPEN_UNLEARNING_OLDEST_ROOT",
            "~/open-unlearning-d3d7cf9",
            "host-oldest",
        ),
    )
}
"""The host versions CI tests, by the name ``GRU_HOST`` takes."""


def host_under_test() -> HostVersion:
    name = os.environ.get("GRU_HOST", "main")
    if name not in HOST_VERSIONS:
        choices = ", ".join(HOST_VERSIONS)
        raise pytest.UsageError(f"GRU_HOST={name!r}: choose one of {choices}")
    return HOST_VERSIONS[name]


UNDER_TEST = host_under_test()
HOST = UNDER_TEST.root

DEFAULT_EXPERIMENT = ["experiment=unlearn/tofu/default", "holdout_split=holdout01"]
# A short CPU run: forget01, 3 optimizer steps of 2 micro-batches.
CPU_RUN = [
    *CPU_OVERRIDES,
    "model=Llama-3.2-1B-Instruct",
    "trainer.args.per_device_train_batch_size=4",
    "trainer.args.gradient_accumulation_steps=2",
    "trainer.args.logging_steps=1",
    "trainer.args.learning_rate=1e-3",
    "+trainer.args.max_steps=3",
    "forget_split=forget01",
    "retain_split=retain99",
]

# Per-method settings the tiny model or the offline data need.
METHOD_OVERRIDES = {
    "RMU": ["trainer.method_args.module_regex=model\\.layers\\.2"],
    "PDU": ["trainer.method_args.retain_loss_eps=0.1"],
    "DPO": [
        "experiment=unlearn/tofu/idk",
        f"data.forget.TOFU_QA_forget_idk.args.idk_path={TOFU / 'idontknow.jsonl'}",
    ],
}


GRU_UNLEARN = shutil.which("gru-unlearn") or str(
    Path(sys.executable).with_name("gru-unlearn")
)
GRU_PLUGIN = str(Path(GRU_UNLEARN).with_name("gru-plugin"))


def has_experiment(overrides) -> bool:
    return any(override.startswith("experiment=") for override in overrides)


def host_missing_reason() -> str | None:
    reason = UNDER_TEST.missing_reason()
    if reason:
        return reason
    if not (TOFU / "forget01.json").is_file():
        return f"TOFU data not found at {TOFU}: set GRU_TOFU_DATA"
    return None


@dataclass
class Run:
    """One finished host run: its folder, its Trainer log and all it printed."""

    out: Path
    output: str = ""
    failed: bool = False

    @property
    def log_history(self) -> list[dict]:
        return json.loads((self.out / "trainer_state.json").read_text())["log_history"]

    @property
    def gru_logs(self) -> list[dict]:
        return [entry for entry in self.log_history if "gru/fired" in entry]

    def weights(self):
        from safetensors.torch import load_file

        return load_file(self.out / "model.safetensors")


def assert_same_weights(a: Run, b: Run) -> None:
    wa, wb = a.weights(), b.weights()
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def assert_close_weights(a: Run, b: Run, rel: float) -> None:
    """Every tensor of ``a`` within ``rel`` (relative L2) of ``b``'s."""
    wa, wb = a.weights(), b.weights()
    for key in wb:
        assert (wa[key] - wb[key]).norm() <= rel * wb[key].norm(), key
