"""MUSE and WMDP through the real host (``benchmarks/muse_wmdp.py --preset smoke``):
the host's own experiments on data shaped from TOFU, base and ``+gru``, its MUSE
eval of every model, and ``gru-plugin report``'s MUSE table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from host_runs import HOST, REPO, TOFU
from safetensors.torch import load_file

DRIVER = REPO / "benchmarks" / "muse_wmdp.py"
STEPS = 4  # the smoke preset's unlearn_steps
EXTRA_PASS = "extra reference forward+backward"
LEADERBOARD = (
    "forget_knowmem_ROUGE",
    "forget_verbmem_ROUGE",
    "privleak",
    "retain_knowmem_ROUGE",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("muse_wmdp") / "smoke"
    command = [
        sys.executable,
        str(DRIVER),
        f"--host={HOST}",
        f"--tofu={TOFU}",
        f"--out={out}",
        "--preset=smoke",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def gru_rows(run_dir: Path) -> list[dict]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    return [entry for entry in state["log_history"] if "gru/fired" in entry]


@pytest.mark.pipeline
@pytest.mark.parametrize(
    "benchmark, split, method",
    [("muse", "News", "NPO"), ("wmdp", "cyber", "RMU")],
)
def test_base_and_gru_train_with_one_rectification_per_step(
    smoke, benchmark, split, method
):
    runs = smoke / "unlearn" / benchmark / split
    assert gru_rows(runs / method / "seed0") == []  # the base run: no GRU
    rows = gru_rows(runs / f"{method}_GRU" / "seed0")
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    # The reference is the retain batch's NLL gradient, never empty.
    assert all(row["gru/ref_norm"] > 0 and row["gru/nonfinite"] == 0 for row in rows)
    assert any(row["gru/fired"] for row in rows)
    log = smoke / "logs" / f"unlearn_{benchmark}_{split}_{method}_GRU_seed0.log"
    # NPO's own retain NLL is the reference (fast path); RMU's retain loss on WMDP
    # is EMBED_DIFF, so GRU needs one extra pass for the NLL.
    assert (EXTRA_PASS in log.read_text()) == (method == "RMU")


@pytest.mark.pipeline
@pytest.mark.parametrize("label", ["RMU", "RMU_GRU"])
def test_wmdp_evaluates_during_training_as_its_recipe_does(smoke, label):
    """``eval_strategy: steps`` every half run, here with the MUSE-News eval (the
    recipe's lm-eval tasks need the hub): the evals land in the log between GRU's
    steps and in ``checkpoint-<S>/evals``, and GRU still rectifies once per step."""
    run_dir = smoke / "unlearn" / "wmdp" / "cyber" / label / "seed0"
    state = json.loads((run_dir / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "forget_knowmem_ROUGE" in e]
    # Once more after training: the host's train.py evaluates when do_eval is set,
    # and transformers sets it for any eval_strategy but "no".
    assert [e["step"] for e in evals] == [STEPS // 2, STEPS, STEPS]
    assert not any("gru/fired" in e for e in evals)
    for step in (STEPS // 2, STEPS):
        assert (run_dir / f"checkpoint-{step}" / "evals" / "MUSE_SUMMARY.json").exists()
    if label.endswith("GRU"):
        assert len(gru_rows(run_dir)) == STEPS


@pytest.mark.pipeline
@pytest.mark.parametrize("label", ["RMU", "RMU_GRU"])
def test_wmdp_rmu_trains_only_the_recipes_parameters(smoke, label):
    """The WMDP recipe's trainable_params_regex (moved to the tiny model's layers
    0-1) holds with GRU: every other weight is the target's, bit for bit."""
    target = load_file(smoke / "models" / "News_target" / "model.safetensors")
    run_dir = smoke / "unlearn" / "wmdp" / "cyber" / label / "seed0"
    unlearned = load_file(run_dir / "model.safetensors")
    changed = {key for key in target if not target[key].equal(unlearned[key])}
    assert changed == {f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)}


@pytest.mark.pipeline
def test_every_model_has_the_hosts_muse_eval_and_the_report_its_table(smoke):
    summaries = sorted((smoke / "evals").rglob("MUSE_SUMMARY.json"))
    labels = {str(path.parent.relative_to(smoke / "evals")) for path in summaries}
    assert labels == {
        "muse/News/target",
        "muse/News/retain",
        "muse/News/NPO/seed0",
        "muse/News/NPO_GRU/seed0",
        "wmdp/cyber/RMU/seed0",
        "wmdp/cyber/RMU_GRU/seed0",
    }
    for path in summaries:
        summary = json.loads(path.read_text())
        assert all(isinstance(summary[key], float) for key in LEADERBOARD), path
    # privleak of the unlearned models is measured against the retain model's eval.
    reference = smoke / "reference" / "News" / "MUSE_EVAL.json"
    assert "mia_min_k" in json.loads(reference.read_text())
    table = (smoke / "report" / "table.md").read_text()
    assert "News</th>" in table
    for metric in LEADERBOARD:
        assert f"<th>{metric}</th>" in table
    assert "NPO+GRU vs " in table and "RMU+GRU vs " in table


@pytest.mark.parametrize("method", ["GradDiff", "NPO"])
def test_wmdp_recipe_runs_other_methods_with_their_own_arguments(method):
    """The WMDP recipe's ``method_args`` are RMU's, which another method's
    ``__init__`` refuses; the driver's overrides leave it only its own."""
    import inspect

    from hydra import compose, initialize_config_dir

    sys.path[:0] = [str(HOST / "src"), str(DRIVER.parent)]
    try:
        from muse_wmdp import WITHOUT_RMU_ARGS
        from trainer import TRAINER_REGISTRY
    finally:
        del sys.path[:2]
    accepted = {
        name
        for cls in TRAINER_REGISTRY[method].__mro__
        if "__init__" in vars(cls)
        for name in inspect.signature(cls.__init__).parameters
    }
    recipe = ["experiment=unlearn/wmdp/default", f"trainer={method}"]
    with initialize_config_dir(config_dir=str(HOST / "configs"), version_base=None):
        as_is = compose("unlearn.yaml", overrides=recipe).trainer.method_args
        ours = compose("unlearn.yaml", recipe + WITHOUT_RMU_ARGS).trainer.method_args
    assert not set(as_is) <= accepted  # steering_coeff and the regexes
    assert set(ours) <= accepted
    assert ours.retain_loss_type == "NLL"
