"""Bad settings fail before training, naming the setting and the fix."""

import pytest
from omegaconf import OmegaConf

from gru_plugin.plugins import available_strategies, make_strategy
from gru_plugin.settings import GRUSettings


def test_defaults_are_the_papers():
    s = GRUSettings()
    assert (s.enabled, s.gamma, s.reference, s.strategy) == (
        True,
        0.8,
        "nll",
        "project",
    )


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, "high"])
def test_gamma_range(gamma):
    with pytest.raises(ValueError, match=r"gru.gamma=.* must lie in \(0, 1\]") as error:
        GRUSettings(gamma=gamma)
    # What gamma means, and the values to choose from.
    assert "weighs the fresh retain gradient in the EMA" in str(error.value)
    assert "(0.8 is the paper's, 1 disables the EMA)" in str(error.value)


def test_gamma_one_allowed():
    assert GRUSettings(gamma=1).gamma == 1


def test_unknown_reference():
    with pytest.raises(ValueError, match="gru.reference='kl'.*nll.*host"):
        GRUSettings(reference="kl")


def test_unknown_key():
    with pytest.raises(ValueError, match=r"unknown GRU setting\(s\) \['gama'\]"):
        GRUSettings.from_mapping({"gama": 0.5})


def test_enabled_must_be_bool():
    with pytest.raises(ValueError, match="gru.enabled"):
        GRUSettings(enabled="no")


def test_unknown_strategy_lists_choices():
    with pytest.raises(
        ValueError, match=r"gru.strategy='pcgrad'.*\['cosclip', 'project'\]"
    ):
        make_strategy("pcgrad")


def test_bad_strategy_args():
    with pytest.raises(ValueError, match="gru.strategy_args for 'project'"):
        make_strategy("project", {"c": 1})


def test_builtins_registered():
    assert {"project", "cosclip"} <= set(available_strategies())


def test_unknown_nonfinite_policy():
    with pytest.raises(ValueError, match="gru.nonfinite='ignore'.*skip.*raise"):
        GRUSettings(nonfinite="ignore")


def test_unknown_projection():
    with pytest.raises(ValueError, match="gru.project='retain'.*all.*forget") as error:
        GRUSettings(project="retain")
    assert (  # what each choice does
        "(all: rectify the whole gradient; forget: only the method's forget part, "
        "its retain term added after)"
    ) in str(error.value)


def test_from_mapping_takes_hydras_config():
    """Hydra's node becomes plain values; strategy_args a dict, also when unset."""
    node = OmegaConf.create(
        {"gamma": 0.5, "strategy": "cosclip", "strategy_args": {"c": -0.3}}
    )
    settings = GRUSettings.from_mapping(node)
    assert settings == GRUSettings(
        gamma=0.5, strategy="cosclip", strategy_args={"c": -0.3}
    )
    assert type(settings.strategy_args) is dict
    for unset in (None, {}, {"strategy_args": None}):
        assert GRUSettings.from_mapping(unset).strategy_args == {}
