"""Third-party strategies through the pluggy hook; built-ins cannot be shadowed."""

import torch

from gru_plugin import rectify_
from gru_plugin.hookspecs import hookimpl
from gru_plugin.plugins import available_strategies, make_strategy, pm


class HalfProjection:
    @hookimpl
    def register_strategies(self, register):
        def make(fraction: float = 0.5):
            def coefficient(dot, grad_sq, ref_sq):
                return fraction * dot / ref_sq if dot < 0 and ref_sq > 0 else 0.0

            return coefficient

        register("half", make)
        register("project", make)  # an attempt to shadow a built-in


def test_registered_strategy_is_used_and_cannot_shadow():
    pm.register(HalfProjection(), name="half-test")
    try:
        assert "half" in available_strategies()
        g, r = [torch.tensor([-2.0, 0.0])], [torch.tensor([1.0, 0.0])]
        stats = rectify_(g, r, make_strategy("half", {"fraction": 0.5}))
        assert stats.coef == -1.0 and torch.equal(g[0], torch.tensor([-1.0, 0.0]))
        g = [torch.tensor([-2.0, 0.0])]
        rectify_(g, r, make_strategy("project"))
        assert torch.equal(g[0], torch.tensor([0.0, 0.0]))
    finally:
        pm.unregister(name="half-test")
    assert "half" not in available_strategies()
