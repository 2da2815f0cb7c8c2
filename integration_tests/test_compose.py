"""``+gru=default`` and ``trainer=<M>_GRU`` compose with the host's experiments."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from host_runs import HOST, HOST_VERSIONS, UNDER_TEST
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gru_plugin.host import HANDLER, build_gru_trainer, resolve_method
from gru_plugin.upstream import METHODS

EXPERIMENTS = ["unlearn/tofu/default", "unlearn/muse/default", "unlearn/wmdp/default"]


def config_digest(root: Path) -> str:
    """The host's configs/, less the model configs (these tests compose only the
    default model): what composition depends on."""
    digest = hashlib.sha256()
    configs = root / "configs"
    for path in sorted(configs.rglob("*")):
        if path.is_file() and path.relative_to(configs).parts[0] != "model":
            digest.update(str(path.relative_to(configs)).encode() + path.read_bytes())
    return digest.hexdigest()


def composed_on_main_already() -> str | None:
    """Why the matrix below would repeat job host-main's checks here (None: it
    would not): another host whose configs are host main's, byte for byte."""
    main = HOST_VERSIONS["main"]
    if UNDER_TEST is main or main.missing_reason():
        return None
    if config_digest(HOST) != config_digest(main.root):
        return None
    return (
        f"the configs of open-unlearning {UNDER_TEST.what} equal host main's "
        "(model configs aside): job host-main composes every experiment and method"
    )


ON_MAIN_ALREADY = composed_on_main_already()
matrix = pytest.mark.skipif(ON_MAIN_ALREADY is not None, reason=str(ON_MAIN_ALREADY))


@pytest.fixture(scope="module")
def registry():
    sys.path.insert(0, str(HOST / "src"))
    try:
        from trainer import TRAINER_REGISTRY
    finally:
        sys.path.remove(str(HOST / "src"))
    return TRAINER_REGISTRY


def composed(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(HOST / "configs"), version_base=None):
        cfg = compose("unlearn.yaml", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def gru_of(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.trainer.method_args.gru, resolve=True)


@matrix
@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("name", list(METHODS))
def test_plus_gru_composes(experiment, name, registry):
    cfg = composed([f"experiment={experiment}", f"trainer={name}", "+gru=default"])
    assert cfg.trainer.handler == HANDLER
    gru = gru_of(cfg)
    assert gru == {
        "enabled": True,
        "gamma": 0.8,
        "reference": "nll",
        "strategy": "project",
        "strategy_args": {},
        "fast_path": True,
        "nonfinite": "skip",
        "project": "all",
        "method": name,
    }
    assert resolve_method(gru["method"], registry) is registry[name]
    # the method's own arguments are untouched
    host = composed([f"experiment={experiment}", f"trainer={name}"])
    own = {k: v for k, v in cfg.trainer.method_args.items() if k != "gru"}
    assert own == dict(host.trainer.get("method_args", {}))
    assert cfg.trainer.args == host.trainer.args


@matrix
@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("name", list(METHODS))
def test_variant_config_composes(experiment, name, registry):
    cfg = composed([f"experiment={experiment}", f"trainer={name}_GRU", "gru.gamma=0.5"])
    assert cfg.trainer.handler == HANDLER
    gru = gru_of(cfg)
    assert gru["gamma"] == 0.5 and gru["method"] == f"{name}_GRU"
    assert resolve_method(gru["method"], registry) is registry[name]


def test_experiment_default_trainer_is_wrapped(registry):
    """The WMDP experiment selects RMU itself; +gru wraps that choice."""
    cfg = composed(["experiment=unlearn/wmdp/default", "+gru=default"])
    assert resolve_method(gru_of(cfg)["method"], registry) is registry["RMU"]


def test_command_line_settings(registry):
    cfg = composed(
        [
            "experiment=unlearn/tofu/default",
            "trainer=NPO",
            "+gru=default",
            "gru.gamma=1.0",
            "gru.reference=host",
            "gru.strategy=cosclip",
            "+gru.strategy_args.c=-0.3",
            "gru.enabled=false",
        ]
    )
    gru = gru_of(cfg)
    assert (gru["gamma"], gru["reference"], gru["strategy"], gru["enabled"]) == (
        1.0,
        "host",
        "cosclip",
        False,
    )
    assert gru["strategy_args"] == {"c": -0.3}


def test_unknown_method_is_named(registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "trainer", type(sys)("trainer"))
    sys.modules["trainer"].TRAINER_REGISTRY = registry
    with pytest.raises(ValueError, match="gru.method='Nope' is not a trainer"):
        build_gru_trainer(gru={"method": "Nope"})


def test_bad_setting_fails_before_any_model_is_built(registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "trainer", type(sys)("trainer"))
    sys.modules["trainer"].TRAINER_REGISTRY = registry
    with pytest.raises(ValueError, match="gru.gamma=2"):
        build_gru_trainer(gru={"method": "NPO", "gamma": 2})
