"""rectify_ against a float64 reference, on random and adversarial inputs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gru_plugin import RectifyStats, rectify_
from gru_plugin.rectify import project_coefficient
from gru_plugin.strategies import make_cosclip

SHAPES = [(3, 4), (5,), (2, 2, 2)]


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


def split(vector: torch.Tensor, dtype=torch.float32) -> list[torch.Tensor]:
    out, start = [], 0
    for shape in SHAPES:
        size = math.prod(shape)
        out.append(vector[start : start + size].reshape(shape).to(dtype).clone())
        start += size
    return out


SIZE = sum(math.prod(s) for s in SHAPES)
finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
vectors = st.lists(finite, min_size=SIZE, max_size=SIZE).map(
    lambda xs: torch.tensor(xs, dtype=torch.float64)
)


def reference_projection(g: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    dot = torch.dot(g, r)
    if dot < 0 and torch.dot(r, r) > 0:
        return g - dot / torch.dot(r, r) * r
    return g


@settings(max_examples=200, deadline=None)
@given(vectors, vectors)
def test_matches_float64_projection(g, r):
    grads, reference = split(g), split(r)
    stats = rectify_(grads, reference)
    expected = reference_projection(flat(split(g)), flat(reference))
    result = flat(grads)
    scale = max(g.norm().item(), 1.0)
    assert torch.allclose(result, expected, atol=1e-4 * scale, rtol=1e-4)
    assert stats.fired == (torch.dot(flat(split(g)), flat(reference)) < 0).item() or (
        not stats.fired and flat(reference).norm() == 0
    )


@settings(max_examples=200, deadline=None)
@given(vectors, vectors)
def test_no_remaining_conflict(g, r):
    grads, reference = split(g), split(r)
    rectify_(grads, reference)
    g2, rr = flat(grads), flat(reference)
    assert (
        torch.dot(g2, rr) >= -1e-6 * g2.norm() * rr.norm() - 1e-6 * g.norm() * rr.norm()
    )


@settings(max_examples=100, deadline=None)
@given(vectors, vectors, vectors)
def test_closest_feasible_vector(g, r, other):
    """KKT: no vector with ⟨x, r⟩ ≥ 0 is closer to g than the rectified one."""
    g = g.float().double()
    grads, reference = split(g), split(r)
    rectify_(grads, reference)
    rr = flat(reference)
    candidate = other
    if torch.dot(candidate, rr) < 0 and torch.dot(rr, rr) > 0:
        candidate = candidate - torch.dot(candidate, rr) / torch.dot(rr, rr) * rr
    mine = (flat(grads) - g).norm()
    theirs = (candidate - g).norm()
    assert mine <= theirs * (1 + 1e-4) + 1e-3


def test_untouched_when_aligned():
    g = [torch.ones(3, 4), torch.ones(5), torch.ones(2, 2, 2)]
    before = [t.clone() for t in g]
    stats = rectify_(g, [t * 2 for t in before])
    assert not stats.fired and stats.coef == 0.0
    assert all(torch.equal(a, b) for a, b in zip(g, before, strict=True))
    assert stats.cos == pytest.approx(1.0)


def test_exactly_opposite_gives_zero():
    r = split(torch.arange(SIZE, dtype=torch.float64) + 1)
    g = [-2 * t for t in r]
    stats = rectify_(g, r)
    assert stats.fired and stats.coef == pytest.approx(-2.0)
    assert flat(g).abs().max() < 1e-4
    assert stats.cos == pytest.approx(-1.0)


def test_zero_reference_is_a_no_op_not_nan():
    g = split(torch.linspace(-1, 1, SIZE, dtype=torch.float64))
    before = [t.clone() for t in g]
    stats = rectify_(g, [torch.zeros_like(t) for t in g])
    assert not stats.fired
    assert all(torch.equal(a, b) for a, b in zip(g, before, strict=True))
    assert all(math.isfinite(v) for v in (stats.dot, stats.cos, stats.coef))


def test_zero_gradient():
    g = [torch.zeros(s) for s in SHAPES]
    stats = rectify_(g, split(torch.ones(SIZE, dtype=torch.float64)))
    assert not stats.fired and stats.cos == 0.0


def test_non_finite_reference_leaves_gradient_untouched():
    g = split(-torch.ones(SIZE, dtype=torch.float64))
    r = split(torch.ones(SIZE, dtype=torch.float64))
    r[0][0, 0] = float("nan")
    before = [t.clone() for t in g]
    stats = rectify_(g, r)
    assert not stats.fired
    assert all(torch.equal(a, b) for a, b in zip(g, before, strict=True))


def test_empty_lists():
    stats = rectify_([], [])
    assert stats == RectifyStats(0.0, 0.0, 0.0, False, 0.0, 0.0, 0.0)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="tensor 1 has shape"):
        rectify_([torch.ones(2), torch.ones(3)], [torch.ones(2), torch.ones(4)])
    with pytest.raises(ValueError, match="2 gradients but 1 reference"):
        rectify_([torch.ones(2), torch.ones(3)], [torch.ones(2)])


def test_bf16_parameters_reduce_in_fp32():
    """Large bf16 tensors: the sign test and coefficient come from fp32 sums."""
    torch.manual_seed(0)
    r32 = [torch.randn(4096), torch.randn(513)]
    g32 = [-0.3 * t + 0.01 * torch.randn_like(t) for t in r32]
    g16, r16 = [t.bfloat16() for t in g32], [t.bfloat16() for t in r32]
    g_ref, rd = flat(g16), flat(r16)
    stats = rectify_(g16, r16)
    expected_coef = (torch.dot(g_ref, rd) / torch.dot(rd, rd)).item()
    assert stats.fired and stats.coef == pytest.approx(expected_coef, rel=1e-5)
    assert all(t.dtype == torch.bfloat16 for t in g16)
    after = flat(g16)
    # bf16 storage rounds the result; the remaining conflict is rounding-sized.
    assert torch.dot(after, rd) >= -1e-2 * after.norm() * rd.norm()


def test_cos_after_reports_the_result():
    torch.manual_seed(1)
    g = split(torch.randn(SIZE, dtype=torch.float64))
    r = [-t.clone() + 0.1 for t in g]
    stats = rectify_(g, r)
    g2, rr = flat(g), flat(r)
    measured = (torch.dot(g2, rr) / (g2.norm() * rr.norm())).item()
    assert stats.cos_after == pytest.approx(measured, abs=1e-5)


def test_cosclip_partial_projection():
    """Above the bound cos-clip is the projection; below it only part is removed."""
    coefficient = make_cosclip(-0.5)
    r = split(torch.ones(SIZE, dtype=torch.float64))
    g = [-t.clone() for t in r]
    g[1] += 1.0  # cos ≈ -0.77 < -0.5
    before = flat(g)
    stats = rectify_(g, r, coefficient)
    rr = flat(r)
    expected = before.norm() * rr.norm() * (stats.cos + 0.5)  # ⟨ĝ,r⟩ = ‖g‖‖r‖(cos−c)
    assert stats.fired and stats.cos < -0.5
    assert torch.dot(flat(g), rr).item() == pytest.approx(expected.item(), rel=1e-5)

    g = split(torch.ones(SIZE, dtype=torch.float64))
    g[0], g[1] = -g[0], -g[1]  # cos = -9/25, above the bound
    stats = rectify_(g, r, coefficient)
    assert stats.fired and stats.cos == pytest.approx(-0.36)
    assert torch.dot(flat(g), flat(r)).abs() < 1e-4


def test_cosclip_bound_is_validated():
    with pytest.raises(ValueError, match="strategy_args.c"):
        make_cosclip(0.5)


def test_missing_gradients_count_as_zero_and_appear_only_when_changed():
    r = [torch.ones(2), torch.ones(3)]
    grads = [-torch.ones(2), None]
    stats = rectify_(grads, r)
    # ⟨g,r⟩ = −2 over ‖r‖² = 5: coef −0.4; the missing gradient becomes 0.4·r.
    assert stats.fired and stats.coef == pytest.approx(-0.4)
    assert torch.allclose(grads[0], torch.full((2,), -0.6))
    assert torch.allclose(grads[1], torch.full((3,), 0.4))
    untouched = [torch.ones(2), None]
    assert not rectify_(untouched, r).fired and untouched[1] is None
    # Where the reference is zero too, rectification changes nothing: no new tensor.
    unreached = [-torch.ones(2), None]
    assert rectify_(unreached, [torch.ones(2), torch.zeros(3)]).fired
    assert unreached[1] is None


@pytest.mark.parametrize("where", ["grads", "reference"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_is_reported_and_changes_nothing(where, bad):
    g = split(-torch.ones(SIZE))
    r = split(torch.ones(SIZE))
    (g if where == "grads" else r)[1].view(-1)[0] = bad
    before = [t.clone() for t in g]
    stats = rectify_(g, r)
    assert not stats.finite and not stats.fired and stats.coef == 0.0
    norm = stats.grad_norm if where == "grads" else stats.ref_norm
    assert not math.isfinite(norm)
    for a, b in zip(g, before, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@settings(max_examples=50, deadline=None)
@given(
    scale=st.floats(1e15, 1e30), dtype=st.sampled_from([torch.float32, torch.bfloat16])
)
def test_huge_norms_stay_finite_and_remove_the_conflict(scale, dtype):
    """Sums that overflow float32 are redone scaled: still the float64 result."""
    g = split((-torch.ones(SIZE) * scale).to(dtype))
    r = split((torch.linspace(0.5, 1.5, SIZE) * scale).to(dtype))
    g64, r64 = flat(g), flat(r)
    stats = rectify_(g, r)
    assert stats.finite and stats.fired
    assert stats.dot == pytest.approx(torch.dot(g64, r64).item(), rel=1e-5)
    assert stats.grad_norm == pytest.approx(g64.norm().item(), rel=1e-5)
    assert stats.ref_norm == pytest.approx(r64.norm().item(), rel=1e-5)
    assert stats.cos_after == pytest.approx(0.0, abs=1e-6)
    assert all(torch.isfinite(t).all() for t in g)
    rounding = 1e-5 if dtype == torch.float32 else 1e-2  # g is stored in its dtype
    error = (flat(g) - reference_projection(g64, r64)).norm()
    assert error <= rounding * g64.norm()


@pytest.mark.parametrize(
    ("dot", "grad_sq", "ref_sq", "coef"),
    [
        (-2.0, 4.0, 4.0, -0.5),  # conflict: remove the component along r
        (-0.5, 1.0, 0.5, -1.0),  # ‖r‖ < 1 is no special case
        (0.5, 1.0, 1.0, 0.0),  # aligned, however little
        (0.0, 1.0, 1.0, 0.0),  # orthogonal
        (-1.0, 1.0, 0.0, 0.0),  # no reference yet
    ],
)
def test_project_coefficient_fires_only_on_a_conflict(dot, grad_sq, ref_sq, coef):
    assert project_coefficient(dot, grad_sq, ref_sq) == coef


def test_one_tensor_is_projected_exactly():
    g, r = [torch.tensor([-2.0, 1.0])], [torch.tensor([1.0, 0.0])]
    stats = rectify_(g, r)
    assert stats.coef == -2.0 and torch.equal(g[0], torch.tensor([0.0, 1.0]))
    assert stats.cos == pytest.approx(-2 / math.sqrt(5))


def half_projection(dot: float, grad_sq: float, ref_sq: float) -> float:
    """Removes half the conflicting component: the result still conflicts."""
    return 0.5 * dot / ref_sq if dot < 0.0 else 0.0


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.dot(a, b) / (a.norm() * b.norm())).item()


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_cosines_are_measured_at_any_scale(scale):
    """cos and cos_after are those of g and of the result, tiny norms included."""
    torch.manual_seed(2)
    g = split(scale * torch.randn(SIZE, dtype=torch.float64))
    r = [-t.clone() + 0.1 * scale for t in g]
    before, rr = flat(g), flat(r)
    stats = rectify_(g, r, half_projection)
    assert stats.fired
    assert stats.cos == pytest.approx(cosine(before, rr), abs=1e-6)
    assert stats.cos_after == pytest.approx(cosine(flat(g), rr), abs=1e-5)
    assert stats.cos_after < -0.1  # half the conflict remains


def test_reduce_sums_gives_every_shard_the_global_coefficient():
    """This shard's g agrees with r; the other shard's conflict decides for both."""
    g, r = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
    other = (-5.0, 9.0, 2.0)  # the other shard's ⟨g, r⟩, ‖g‖², ‖r‖²
    seen = []

    def all_reduce(sums):
        seen.append(sums)
        return tuple(mine + theirs for mine, theirs in zip(sums, other, strict=True))

    stats = rectify_(g, r, reduce_sums=all_reduce)
    assert seen == [(1.0, 1.0, 2.0)]
    assert (stats.dot, stats.coef) == (-4.0, -1.0)
    assert stats.grad_norm == pytest.approx(math.sqrt(10.0))
    assert torch.equal(g[0], torch.tensor([2.0, 1.0]))  # g − coef·r


def test_non_finite_sums_never_reach_the_strategy():
    calls = []

    def always_fires(dot, grad_sq, ref_sq):
        calls.append(dot)
        return -1.0

    g, r = [torch.tensor([float("nan"), 1.0])], [torch.tensor([1.0, 1.0])]
    stats = rectify_(g, r, always_fires)
    assert calls == [] and not stats.fired and stats.coef == 0.0
    torch.testing.assert_close(g[0], torch.tensor([float("nan"), 1.0]), equal_nan=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_coefficient_changes_nothing(bad):
    g, r = [torch.tensor([-1.0, 1.0]), None], [torch.ones(2), torch.ones(3)]
    stats = rectify_(g, r, lambda dot, grad_sq, ref_sq: bad)
    assert not stats.fired and stats.coef == 0.0
    assert torch.equal(g[0], torch.tensor([-1.0, 1.0])) and g[1] is None


def test_an_overflowing_piece_beside_a_zero_one_sums_exactly():
    """Rescaled sums of a huge piece against a zero one are zero, not NaN (0/0)."""
    huge = torch.full((4,), 1e30)
    g = [huge.clone(), torch.zeros(4)]
    r = [torch.zeros(4), huge.clone()]
    stats = rectify_(g, r)
    assert stats.finite and not stats.fired
    assert (stats.dot, stats.cos) == (0.0, 0.0)
    assert stats.grad_norm == pytest.approx(2e30, rel=1e-6)
    assert stats.ref_norm == pytest.approx(2e30, rel=1e-6)
    assert torch.equal(g[0], huge) and torch.equal(g[1], torch.zeros(4))


def test_a_missing_gradient_beside_a_huge_reference():
    """The rescaled ‖r‖² of a piece without a gradient; that piece of g becomes
    −coef·r."""
    g = [torch.full((2,), -1e20), None]
    r = [torch.full((2,), 1e20), torch.full((2,), 1e20)]
    stats = rectify_(g, r)
    assert stats.finite and stats.fired
    assert stats.coef == pytest.approx(-0.5, rel=1e-6)  # ⟨g,r⟩ = −2e40, ‖r‖² = 4e40
    assert stats.ref_norm == pytest.approx(2e20, rel=1e-6)
    assert torch.allclose(g[0], torch.full((2,), -0.5e20), rtol=1e-6)
    assert torch.allclose(g[1], torch.full((2,), 0.5e20), rtol=1e-6)
