"""The TOFU pipeline (benchmarks/tofu_reproduction.py) through the real host: the
smoke preset end to end, the quick preset's measure at toy size, and, without
``--data-dir``, the host commands that read TOFU from the hub (composed, not run)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from host_runs import HOST, REPO, TOFU
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gru_plugin.cli import OFFLINE_ENV
from gru_plugin.local_data import TOFU_HUB, dataset_nodes

PIPELINE = REPO / "benchmarks" / "tofu_reproduction.py"
sys.path.insert(0, str(PIPELINE.parent))
from tofu_reproduction import PRESETS, Pipeline  # noqa: E402


def pipeline_command(out: Path, *options: str) -> list[str]:
    return [
        sys.executable,
        str(PIPELINE),
        f"--host={HOST}",
        f"--data-dir={TOFU}",
        f"--out={out}",
        *options,
    ]


@pytest.mark.pipeline
def test_smoke_pipeline_trains_evaluates_and_reports(tmp_path) -> None:
    out = tmp_path / "smoke"
    command = pipeline_command(out, "--preset=smoke")
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    with (out / "report" / "table.csv").open() as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    names = ["Finetuned", "Retain", "GradDiff", "GradDiff+GRU", "GradDiff+GRU-forget"]
    assert list(rows) == names
    # The retain model against its own reference log: identical distributions.
    assert float(rows["Retain"]["forget_quality_mean"]) == 1.0
    for row in rows.values():
        assert 0.0 <= float(row["model_utility_mean"]) <= 1.0
        assert 0.0 < float(row["forget_quality_mean"]) <= 1.0
    assert rows["GradDiff+GRU"]["base"] == rows["GradDiff+GRU-forget"]["base"]
    assert rows["GradDiff+GRU"]["base"] == "GradDiff"
    # Each run is a path: the target, its checkpoints (4 of 8 steps), the end.
    for label in ("GradDiff", "GradDiff_GRU", "GradDiff_GRU-forget"):
        path = out / "trajectories" / label / "seed0"
        assert sorted(p.name for p in path.iterdir()) == ["step0", "step4", "step8"]
        assert all((p / "TOFU_SUMMARY.json").exists() for p in path.iterdir())
        assert not list((out / "unlearn" / label / "seed0").glob("checkpoint-*"))
    forget_state = (
        out / "unlearn" / "GradDiff_GRU-forget" / "seed0" / "trainer_state.json"
    )
    log = json.loads(forget_state.read_text())["log_history"]
    assert sum("gru/cos" in entry for entry in log) == 8
    for plot in ("tradeoff.png", "gru_trace.png", "paths.png"):
        assert (out / "report" / plot).stat().st_size > 0
    table = (out / "report" / "table.md").read_text()
    assert "## Along the way" in table
    # One seed never gets a verdict (nor does a level no run rose above).
    (said,) = [
        x for x in table.splitlines() if x.startswith("- GradDiff_GRU-forget vs")
    ]
    assert said.endswith(": no verdict"), said
    assert (out / "report" / "paths.csv").read_text().count("GradDiff_GRU-forget,") == 3
    state_file = out / "unlearn" / "GradDiff_GRU" / "seed0" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert any("gru/cos" in entry for entry in state["log_history"])

    # Resumable: a second call finds every stage done and runs no host process.
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0
    assert not re.search(r"^  \S+: \d+ s$", again.stdout, re.MULTILINE), again.stdout


QUICK_AT_TOY_SIZE = """
import sys
from dataclasses import replace
from pathlib import Path
from tofu_reproduction import PRESETS, Pipeline

host, data, out = map(Path, sys.argv[1:])
scale = replace(
    PRESETS["quick"], hidden=32, layers=2, vocab_size=512, finetune_steps=4,
    unlearn_steps=2, methods=("NPO",),
)
Pipeline(host, data, out, scale).run(jobs=2)
"""


@pytest.mark.pipeline
def test_quick_preset_measure_at_toy_size(tmp_path) -> None:
    """The README's main job, shrunk: no retain model, no host eval, NLL table."""
    out = tmp_path / "quick"
    done = subprocess.run(
        [sys.executable, "-c", QUICK_AT_TOY_SIZE, str(HOST), str(TOFU), str(out)],
        cwd=PIPELINE.parent,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["NPO base", "NPO +gru", "target (before unlearning)"]
    assert results["NPO base"]["fired_rate"] is None
    assert 0.0 <= results["NPO +gru"]["fired_rate"] <= 1.0
    assert results["NPO +gru"]["steps"] == 2
    for row in results.values():
        assert row["forget_nll"] > 0 and row["retain_nll"] > 0
    assert not (out / "models" / "retain").exists()
    assert not (out / "evals").exists()
    assert "| NPO +gru | 2 |" in (out / "results.md").read_text()


def recorded_commands(pipeline: Pipeline) -> list[tuple[list[str], dict[str, str]]]:
    """Each stage's host command, recorded instead of run."""
    commands = []
    pipeline.host_run = lambda name, command, *overrides: commands.append(
        pipeline.host_command(command, overrides)
    )
    model = pipeline.out / "models" / "some_model"
    splits = pipeline.scale.target_splits
    pipeline.finetune("target", model, pipeline.training_file(splits), 1)
    pipeline.unlearn("NPO", "gru", 0, model)
    pipeline.evaluate("target", model, pipeline.out / "evals" / "target", None)
    return commands


def composed(argv: list[str]):
    """The config the host would compose for ``argv`` (our plugin on the path);
    ``gru-plugin eval`` commands name no config: the host's eval.yaml."""
    config = next(
        (a.split("=", 1)[1] for a in argv if a.startswith("--config-name=")),
        "eval.yaml",
    )
    overrides = [a for a in argv if "=" in a and not a.startswith("--")]
    with initialize_config_dir(str(HOST / "configs"), version_base=None):
        return compose(config, overrides=overrides)


def composed_datasets(argv: list[str]) -> dict[str, dict]:
    """The dataset nodes of the config the host would compose for ``argv``."""
    return {
        path: OmegaConf.to_container(hf_args, resolve=True)
        for path, hf_args in dataset_nodes(composed(argv))
    }


def test_gpu_preset_is_the_hosts_recipe_with_its_published_models(tmp_path) -> None:
    """One flag away: the host's TOFU targets and hyper-parameters on a GPU, base
    and each GRU variant; checked by the commands it composes (no download)."""
    pipeline = Pipeline(HOST, None, tmp_path, PRESETS["gpu"])
    commands = []
    pipeline.host_run = lambda name, command, *overrides: commands.append(
        pipeline.host_command(command, overrides)
    )
    target, retain = pipeline.train_models(jobs=1)
    assert commands == []  # the hub's models: nothing is fine-tuned
    assert target == "open-unlearning/tofu_Llama-3.2-1B-Instruct_full"
    assert retain == "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90"
    assert ("RMU", "gru:host", 0) in pipeline.runs()
    assert len(pipeline.runs()) == 3 * (5 * 3 + 1)
    pipeline.unlearn("NPO", "gru:forget", 0, target)
    ((argv, env),) = commands
    assert "--cpu" not in argv and env.get("OMP_NUM_THREADS") == os.environ.get(
        "OMP_NUM_THREADS"
    )
    ours = composed(argv)
    host = composed(
        [
            "--config-name=unlearn.yaml",
            "experiment=unlearn/tofu/default",
            "trainer=NPO",
            "task_name=x",
        ]
    )
    assert ours.model.model_args.pretrained_model_name_or_path == target
    for key in ("learning_rate", "num_train_epochs", "bf16", "optim", "weight_decay"):
        assert ours.trainer.args[key] == host.trainer.args[key], key
    assert ours.trainer.method_args.beta == host.trainer.method_args.beta
    args = ours.trainer.args
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 32
    assert (args.save_strategy, args.save_steps) == ("steps", 0.2)
    assert (ours.gru.project, ours.gru.reference) == ("forget", "nll")
    assert ours.forget_split == "forget10" and ours.retain_split == "retain90"


def test_without_data_dir_the_host_reads_tofu_from_the_hub(tmp_path) -> None:
    """No --data-dir: the host keeps its own TOFU configs (path locuslab/TOFU) and
    runs online; only the fine-tuning mix we write is a local file."""
    pipeline = Pipeline(HOST, None, tmp_path, PRESETS["full"])
    commands = recorded_commands(pipeline)
    assert len(commands) == 3
    for argv, env in commands:
        assert not any(a.startswith("--data-dir") for a in argv)
        for key in OFFLINE_ENV:
            assert env.get(key) == os.environ.get(key)
    finetune, unlearn, evaluate = (composed_datasets(argv) for argv, _ in commands)

    mix = finetune.pop("data.train.TOFU_QA_full.args.hf_args")
    assert mix["path"] == "json"
    mixed = tmp_path / "data" / "forget05+retain_perturbed_and_general.json"
    assert mix["data_files"] == str(mixed)
    forget, retain = (
        f"data.{r}.TOFU_QA_{r}.args.hf_args" for r in ("forget", "retain")
    )
    assert unlearn[forget]["name"] == "forget05"
    assert unlearn[retain]["name"] == "retain_perturbed"
    for nodes in (finetune, unlearn, evaluate):
        assert nodes and all(a["path"] == TOFU_HUB for a in nodes.values()), nodes


def test_with_data_dir_the_host_runs_offline_on_local_files(tmp_path) -> None:
    pipeline = Pipeline(HOST, TOFU, tmp_path, PRESETS["quick"])
    for argv, env in recorded_commands(pipeline):
        assert f"--data-dir={TOFU}" in argv
        assert OFFLINE_ENV.items() <= env.items()
    assert pipeline.training_file(("full",)) == TOFU / "full.json"


def test_hub_files_are_loaded_as_the_host_loads_them(tmp_path, monkeypatch) -> None:
    """Our own reads (tokenizer text, mixes, NLL sets) fetch a hub config once."""
    import datasets

    calls = []

    class Loaded:
        def to_json(self, path) -> None:
            Path(path).write_text('{"question": "q", "answer": "a"}\n')

    def load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return Loaded()

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    pipeline = Pipeline(HOST, None, tmp_path, PRESETS["quick"])
    for _ in range(2):
        assert pipeline.tofu_file("forget10") == tmp_path / "data" / "forget10.json"
    host_config = OmegaConf.load(HOST / "configs/data/datasets/TOFU_QA_forget.yaml")
    hf_args = host_config.TOFU_QA_forget.args.hf_args
    assert calls == [(hf_args.path, {"name": "forget10", "split": hf_args.split})]
    assert not list((tmp_path / "data").glob("*.part"))
