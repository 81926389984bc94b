"""Property tests with hypothesis: generated problems, one ranking or grouped, against
the float64 reference. Together they run more than 1000 generated cases per test run."""

import math

import pytest
import torch
from groupings import BIG, HUGE
from helpers import LABEL_DTYPES, SCORE_DTYPES, TOLERANCE, assert_same_result, loss_and_grad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from losses import ap_grouped_reference

import aploss_cuda
from aploss_cuda.reference import ap_loss_reference

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

# Label dtypes that can hold -1 (bool and uint8 cannot).
SIGNED_LABEL_DTYPES = [d for d in LABEL_DTYPES if d not in (torch.bool, torch.uint8)]


@st.composite
def problems(draw):
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=3)))
    numel = math.prod(shape)
    grid = draw(st.sampled_from([None, 0.5, 0.25]))  # coarse grids make exact ties
    values = draw(
        st.lists(st.floats(-6, 6, allow_nan=False, width=32), min_size=numel, max_size=numel)
    )
    scores = torch.tensor(values, dtype=torch.float64).reshape(shape)
    if grid is not None:
        scores = (scores / grid).round() * grid
    label_values = draw(st.lists(st.sampled_from([-1, 0, 0, 1]), min_size=numel, max_size=numel))
    labels = torch.tensor(label_values, dtype=torch.int64).reshape(shape)
    dtype = draw(st.sampled_from(SCORE_DTYPES))
    label_dtype = draw(st.sampled_from(SIGNED_LABEL_DTYPES))
    delta = draw(st.sampled_from([0.05, 0.3, 1.0, 2.5]))
    interpolate = draw(st.booleans())
    return scores.to(dtype), labels.to(label_dtype), delta, interpolate


@st.composite
def grouped_problems(draw):
    shape = tuple(draw(st.lists(st.integers(0, 12), min_size=0, max_size=3)))
    numel = math.prod(shape)
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    # group layout: ids vary along a subset of the dimensions, leading ones may be dropped
    dropped = draw(st.integers(0, len(shape)))
    id_shape = tuple(
        s if draw(st.booleans()) else 1 for s in shape[dropped:]
    )
    num_ids = draw(st.integers(1, 6))
    id_map = draw(st.sampled_from(["small", "big", "huge"]))
    ids = torch.randint(0, num_ids, id_shape, generator=gen)
    ids = {"small": ids, "big": ids * BIG + 3, "huge": ids * HUGE + 2**40}[id_map]
    ids = ids.to(draw(st.sampled_from([torch.int64, torch.int32]))) if id_map == "small" else ids
    # label mix
    p_pos = draw(st.sampled_from([0.0, 0.1, 0.3, 0.6, 1.0]))
    p_ignore = draw(st.sampled_from([0.0, 0.15, 0.5]))
    u = torch.rand(shape, generator=gen)
    labels = torch.zeros(shape, dtype=torch.int64)
    labels[u < p_pos] = 1
    labels[(u >= p_pos) & (u < p_pos + p_ignore)] = -1
    # scores, with exact ties on a coarse grid
    grid = draw(st.sampled_from([None, 0.5, 0.25]))
    scores = torch.randn(shape, generator=gen, dtype=torch.float64) * draw(st.sampled_from([0.3, 1.0, 4.0]))
    if grid is not None:
        scores = (scores / grid).round() * grid
    delta = draw(st.sampled_from([0.1, 0.5, 1.0, 2.5]))
    interpolate = draw(st.booleans())
    dtype = draw(st.sampled_from([torch.float64] * 3 + [torch.float32, torch.float16, torch.bfloat16]))
    return scores.to(dtype), labels, ids, delta, interpolate


def ungrouped_problems():
    """problems() with a method; group_ids None."""
    return st.tuples(problems(), st.sampled_from(["sorted", "pairwise"])).map(
        lambda p: (p[0][0], p[0][1], None, p[0][2], p[0][3], p[1]))


# Per grouping: the problems and how many of them one run draws.
GENERATED = {
    "ungrouped": (ungrouped_problems, 200),
    "grouped": (lambda: grouped_problems().map(lambda p: p + ("sorted",)), 400),
}


@pytest.mark.parametrize("grouping", GENERATED)
def test_matches_reference(grouping):
    strategy, examples = GENERATED[grouping]

    @settings(SETTINGS, max_examples=examples)
    @given(problem=strategy())
    def check(problem):
        check_matches_reference(*problem)

    check()


def check_matches_reference(scores, labels, group_ids, delta, interpolate, method):
    loss, grad = loss_and_grad(scores, labels, group_ids=group_ids, delta=delta,
                               interpolate=interpolate, method=method)
    assert loss.dtype == scores.dtype and loss.dim() == 0
    assert grad.dtype == scores.dtype and grad.shape == scores.shape
    y = labels.to(torch.int64)
    if group_ids is None:
        ref_loss, ref_grad = ap_loss_reference(scores, labels, delta=delta, interpolate=interpolate)
        flat = torch.arange(scores.numel())
        rankings = {0: (flat, ref_loss.item())} if (y == 1).any() else {}
    else:
        ref_loss, ref_grad, rankings = ap_grouped_reference(scores, labels, group_ids, delta,
                                                            interpolate)
    assert_same_result((loss, grad), (ref_loss, ref_grad), scores.dtype)
    # AP-loss lies in [0, 1]; without a ranking with a positive, loss and gradient are 0
    assert 0.0 <= loss.item() <= 1.0
    if not rankings:
        assert loss.item() == 0.0 and (grad.numel() == 0 or grad.abs().max().item() == 0.0)
    if scores.dtype == torch.float64:  # each ranking's balance: +loss / G and -loss / G
        flat_grad, flat_labels = grad.reshape(-1), y.reshape(-1)
        for idx, loss_g in rankings.values():
            labels_g, grad_g = flat_labels[idx], flat_grad[idx]
            share = loss_g / len(rankings)
            if (labels_g == 0).any():
                assert grad_g[labels_g == 0].sum().item() == pytest.approx(share, abs=1e-12)
            assert grad_g[labels_g == 1].sum().item() == pytest.approx(-share, abs=1e-12)


@SETTINGS
@given(problem=problems())
def test_sorted_equals_pairwise_and_balance(problem):
    scores, labels, delta, interpolate = problem
    loss_s, grad_s = loss_and_grad(scores, labels, delta=delta, interpolate=interpolate, method="sorted")
    loss_p, grad_p = loss_and_grad(scores, labels, delta=delta, interpolate=interpolate, method="pairwise")
    tol = TOLERANCE[scores.dtype]
    torch.testing.assert_close(loss_s, loss_p, **tol)
    scale = grad_p.abs().max().item() if grad_p.numel() else 0.0
    torch.testing.assert_close(grad_s, grad_p, rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * scale)
    if scores.dtype == torch.float64:
        y = labels.to(torch.int64)
        assert grad_s[y == 0].sum().item() == pytest.approx(loss_s.item(), abs=1e-9)
        assert grad_s[y == 1].sum().item() == pytest.approx(-loss_s.item(), abs=1e-9)
    assert 0.0 <= loss_s.item() <= 1.0


@SETTINGS
@given(
    problem=problems(),
    shift=st.sampled_from([-1e4, 3.0, 1e5]),
    scale=st.sampled_from([0.5, 2.0]),
)
def test_shift_and_scale_invariance(problem, shift, scale):
    # AP depends on differences; scaling scores and delta together changes no H. The
    # error-driven gradient has no 1/delta factor, so it is unchanged too.
    scores, labels, delta, interpolate = problem
    scores = scores.double()
    base, grad = loss_and_grad(scores, labels, delta=delta, interpolate=interpolate)
    moved, grad_moved = loss_and_grad(scores * scale + shift, labels, delta=delta * scale, interpolate=interpolate)
    torch.testing.assert_close(moved, base, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(grad_moved, grad, rtol=1e-6, atol=1e-9)


DOCUMENTED = (TypeError, ValueError)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(0, 6), max_size=3),
    label_shape_differs=st.booleans(),
    score_dtype=st.sampled_from(list(SCORE_DTYPES) + [torch.int64, torch.bool, torch.complex64]),
    label_dtype=st.sampled_from(list(LABEL_DTYPES) + [torch.int16, torch.float16]),
    values=st.sampled_from(["normal", "nan", "inf", "huge", "labels-out-of-range"]),
    delta=st.sampled_from([1.0, 0.0, -1.0, float("nan"), float("inf"), 1e-300, 1e300]),
    method=st.sampled_from(["auto", "sorted", "pairwise", "bogus"]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_never_crashes(shape, label_shape_differs, score_dtype, label_dtype, values, delta, method, seed):
    """Garbage in: either a finite loss in [0, 1] or one of the documented exceptions."""
    g = torch.Generator().manual_seed(seed)
    numel = math.prod(shape)
    raw = torch.randn(numel, generator=g, dtype=torch.float64) * 3
    if values == "nan" and numel:
        raw[torch.randint(numel, (1,), generator=g)] = float("nan")
    elif values == "inf" and numel:
        raw[torch.randint(numel, (1,), generator=g)] = float("inf")
    elif values == "huge":
        raw = raw * 1e30
    labels = torch.randint(-1, 2, (numel,), generator=g)
    if values == "labels-out-of-range" and numel:
        labels[torch.randint(numel, (1,), generator=g)] = 7
    scores = raw.reshape(shape).to(score_dtype)
    labels = labels.reshape(shape).to(label_dtype)
    if label_shape_differs:
        labels = labels.reshape(-1)[:-1] if numel else labels.reshape(1, -1, 1)
    try:
        x = scores.clone().requires_grad_(True) if scores.is_floating_point() else scores
        loss = aploss_cuda.ap_loss(x, labels, delta=delta, method=method)
        if x.requires_grad:
            loss.backward()
            assert torch.isfinite(x.grad).all()
    except DOCUMENTED:
        return
    assert math.isfinite(loss.item()) and 0.0 <= loss.item() <= 1.0
