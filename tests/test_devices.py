"""One body per property, run on every target (tests/devices.py): the CPU kernels, the
CUDA kernels on the emulated device (two profiles, several thread and block orders), and
a real GPU when present; where a property holds for every loss or grouping, over a table
of cases (Case: loss, method, grouping; tests/losses.py, tests/groupings.py). Expected values come from the float64 reference or, for sizes
it is too slow for, from the CPU kernels run outside the target. Sizes that only a GPU
runs in a moment are used on the `cuda` target alone (`target.gpu`); what only a GPU can
show (streams, host syncs, 2^31 entries, ...) is in tests/test_cuda.py."""

import contextlib
import typing

import losses
import pytest
import torch
from devices import CPU, CUDA_KERNEL_TARGETS, SHARED_LIMIT_P, TARGETS
from family_checks import check_alrp, check_rank_sort
from groupings import group_ids
from helpers import (
    KERNEL_METHODS,
    LABEL_DTYPES,
    SCORE_DTYPES,
    assert_same_result,
    loss_and_grad,
    random_problem,
)

import aploss_cuda
from aploss_cuda.reference import ap_loss_reference

METHODS = KERNEL_METHODS
targets = pytest.mark.parametrize("target", TARGETS, ids=str)


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


def targets_and_dtypes(argname, dtypes, *, of):
    """Parametrizes `target` and `argname` over TARGETS x dtypes, leaving out the pairs a
    target does not compile (`of`: "scores" or "labels"; the emulated device compiles a few)."""
    params = [
        pytest.param(target, dtype, id=f"{dtype_id(dtype)}-{target}")
        for target in TARGETS
        for dtype in dtypes
        if target.compiles(**{of: dtype})
    ]
    return pytest.mark.parametrize(("target", argname), params)


def run(target, scores, labels, **kwargs):
    """Loss and gradient computed on the target, returned on the CPU."""
    scores, labels = target.put(scores), target.put(labels)
    if "group_ids" in kwargs:
        kwargs["group_ids"] = target.put(kwargs["group_ids"])
    with target.running():
        loss, grad = loss_and_grad(scores, labels, **kwargs)
    assert loss.device == scores.device and grad.device == scores.device
    return loss.cpu(), grad.cpu()


def run_case(target, case, scores, second, ids=None, **kwargs):
    """(loss, gradient) of `case` computed on the target, returned on the CPU; kwargs:
    losses.run's."""
    with target.running():
        loss, grad = losses.run(case.loss, target.put(scores), target.put(second),
                                **on_target(target, case, ids, kwargs))
    assert loss.device == grad.device == target.put(scores).device
    return loss.cpu(), grad.cpu()


def check_case_against_reference(target, case, scores, second, ids=None, **kwargs):
    """`case` on the target against the float64 reference (Rank & Sort and aLRP: every
    output, family_checks); returns (loss, gradient)."""
    if case.loss == "rank_sort":
        return check_rank_sort(target, scores, second, group_ids=ids, **kwargs)
    if case.loss == "alrp":
        regression = kwargs.pop("regression_losses")
        return check_alrp(target, scores, second, regression, group_ids=ids, **kwargs)
    got = run_case(target, case, scores, second, ids, **kwargs)
    loss, grad = got
    assert loss.dtype == scores.dtype and loss.dim() == 0
    assert grad.dtype == scores.dtype and grad.shape == scores.shape
    expected = losses.reference(case.loss, scores, second, ids, **kwargs)
    assert_same_result(got, expected, scores.dtype)
    return got


def check_against_reference(target, scores, labels, delta=1.0, interpolate=True, method="sorted"):
    got = run(target, scores, labels, delta=delta, interpolate=interpolate, method=method)
    loss, grad = got
    assert loss.dtype == scores.dtype and loss.dim() == 0
    assert grad.dtype == scores.dtype and grad.shape == scores.shape
    assert_same_result(got, ap_loss_reference(scores, labels, delta=delta, interpolate=interpolate), scores.dtype)
    return got


def cpu_kernels(scores, labels, **kwargs):
    return loss_and_grad(scores, labels, **kwargs)


def assert_same_bits(target, got, expected, dtype):
    """One result reached two ways: bitwise equal on the CPU and the emulated device (a
    fixed schedule); on a GPU, whose sorted pass 1 sums with float64 atomics, equal to the
    output rounding."""
    if target.gpu:
        assert_same_result(got, expected, dtype, rtol=0)
    else:
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


class Case(typing.NamedTuple):
    """One row of a table: a loss, its method (AP-loss's only) and a grouping (a
    groupings.py name; None: one ranking)."""

    loss: str
    method: str = None
    grouping: str = None

    def __str__(self):
        return "-".join(p for p in (self.loss, self.method, self.grouping or "ungrouped") if p)


def cases(*rows):
    return [Case(*row) for row in rows]


def targets_and_cases(table, argname=None, values=(), *, of=None):
    """Parametrizes `target` and `case` over TARGETS x table (x values as `argname`,
    leaving out the dtypes a target does not compile; `of`: "scores" or "labels")."""
    names = ("target", "case") + ((argname,) if argname else ())
    params = []
    for target in TARGETS:
        for case in table:
            if not argname:
                params.append(pytest.param(target, case, id=f"{case}-{target}"))
                continue
            for value in values:
                if of is None or target.compiles(**{of: value}):
                    name = f"{dtype_id(value)}-{case}-{target}"
                    params.append(pytest.param(target, case, value, id=name))
    return pytest.mark.parametrize(names, params)


def on_target(target, case, ids, kwargs):
    """losses.run's keyword arguments for `case` on the target."""
    kwargs = {k: target.put(v) if torch.is_tensor(v) else v for k, v in kwargs.items()}
    if case.loss == "ap":
        kwargs.setdefault("method", case.method)
    return dict(kwargs, group_ids=target.put(ids))


UNGROUPED_AP = cases(("ap", "sorted", None), ("ap", "pairwise", None))


@contextlib.contextmanager
def deterministic_algorithms():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


# ---- against the float64 reference ----------------------------------------------------------


@targets
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("delta", [0.1, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("seed", range(4))
def test_random_cases(target, method, interpolate, delta, seed):
    shape = [(300,), (7, 41), (3, 5, 17), (2, 3, 4, 9)][seed]
    scores, labels = random_problem(shape, seed=seed, p_pos=0.08 + 0.05 * seed, ties=seed % 2 == 1)
    check_against_reference(target, scores, labels, delta=delta, interpolate=interpolate, method=method)


# Groupings whose ids are broadcast, full-size, their own codes or numbered through a sort.
SCORE_DTYPE_CASES = UNGROUPED_AP + cases(
    ("ap", "sorted", "per-image"), ("ap", "sorted", "per-class"), ("ap", "sorted", "full-size"),
    ("ap", "sorted", "full-size-huge-ids"))


@targets_and_cases(SCORE_DTYPE_CASES, "dtype", SCORE_DTYPES, of="scores")
def test_score_dtypes(target, case, dtype):
    shape = (4, 30, 5)
    scores, labels = random_problem(shape, seed=1, dtype=dtype, ties=True, p_pos=0.15)
    for delta, interpolate in ((1.0, True), (0.5, False)):
        check_case_against_reference(target, case, scores, labels, group_ids(case.grouping, shape),
                                     delta=delta, interpolate=interpolate)


@targets_and_cases(UNGROUPED_AP + cases(("ap", "sorted", "per-image-and-class")),
                   "label_dtype", LABEL_DTYPES, of="labels")
def test_label_dtypes(target, case, label_dtype):
    # uint8 and bool cannot hold -1: no ignored entries for them.
    p_ignore = 0.0 if label_dtype in (torch.uint8, torch.bool) else 0.1
    shape = (4, 25, 5)
    scores, labels = random_problem(shape, seed=2, label_dtype=label_dtype, p_ignore=p_ignore)
    ids = group_ids(case.grouping, shape)
    got = check_case_against_reference(target, case, scores, labels, ids)
    as_int64 = run_case(target, case, scores, labels.to(torch.int64), ids)
    assert_same_bits(target, got, as_int64, scores.dtype)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_ties_and_window_corners(target, method):
    # Scores exactly delta and 2 delta apart, positives tied with negatives and each other.
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.0, 1.0, 0.5]).repeat(100)[torch.randperm(300, generator=g)]
    labels = (torch.arange(300) % 3 == 0).long() - (torch.arange(300) % 7 == 0).long()
    check_against_reference(target, scores, labels, delta=0.5, method=method)
    # Scores exactly delta apart sit on the corners of H: each must count exactly once.
    corners = torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5], dtype=torch.float64)
    check_against_reference(target, corners, torch.tensor([1, 0, 0, 0, 0, 1, 0]), method=method)
    # Every score equal: each H is exactly 1/2.
    check_against_reference(target, torch.zeros(50), (torch.arange(50) % 5 == 0).long(), method=method)


@targets_and_cases(UNGROUPED_AP + cases(("rank_sort",), ("alrp",)), "dtype",
                   [torch.float32, torch.float64])
def test_huge_and_tiny_scores(target, case, dtype):
    big, tiny = 1e30, torch.finfo(dtype).tiny / 4  # tiny: subnormal
    scores = torch.tensor([big, -big, tiny, -tiny, 0.0, 1.0, big, -big, 3 * tiny, 0.5, big],
                          dtype=dtype)
    targets = torch.tensor([0.5, 0.0, 1.0, 0.0, 0.0, 0.7, 0.0, 0.2, 0.0, 0.0, 0.9], dtype=dtype)
    second = targets if case.loss == "rank_sort" else (targets > 0).long()
    extra = {}
    if case.loss == "alrp":
        extra["regression_losses"] = torch.linspace(0.1, 0.5, 5, dtype=dtype)
    loss, grad = check_case_against_reference(target, case, scores, second, **extra)
    assert torch.isfinite(loss).item() and torch.isfinite(grad).all().item()
    # A cluster far from zero: linear terms relative to the cluster shift.
    scores, second, extra = losses.problem(case.loss, (400,), seed=5, p_pos=0.1,
                                           dtype=torch.float64, ties=True, loc=1e12)
    check_case_against_reference(target, case, scores, second, **extra)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_edge_label_mixes(target, method):
    scores = torch.randn(64, generator=torch.Generator().manual_seed(3))
    cases = {
        "no positive": torch.zeros(64, dtype=torch.int64),
        "no negative": torch.ones(64, dtype=torch.int64),
        "all ignored": torch.full((64,), -1),
        "one positive": torch.nn.functional.one_hot(torch.tensor(7), 64),
        "one negative": 1 - torch.nn.functional.one_hot(torch.tensor(7), 64),
    }
    for name, labels in cases.items():
        loss, grad = check_against_reference(target, scores, labels, method=method)
        if name in ("no positive", "no negative", "all ignored"):
            assert loss.item() == 0.0 and grad.abs().sum().item() == 0.0, name


@targets
@pytest.mark.parametrize("method", METHODS)
def test_tiny_and_empty_inputs(target, method):
    for shape in [(1,), (2,), (3,), (1, 1, 1), (0,), (5, 0, 3)]:
        for seed in range(3):
            scores, labels = random_problem(shape, seed=seed, p_pos=0.5, p_ignore=0.2)
            check_against_reference(target, scores, labels, method=method)
    loss, grad = run(target, torch.tensor(0.3), torch.tensor(1), method=method)  # zero-dimensional
    assert loss.item() == 0.0 and grad.shape == () and grad.item() == 0.0


@targets
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("regime", ["init", "trained"])
def test_init_and_trained_regimes(target, method, regime):
    if regime == "init":  # a detector at initialisation: every negative within delta of a positive
        scores, labels = random_problem((6000,), seed=14, p_pos=0.01, p_ignore=0.01, loc=-4.6, scale=0.5)
    else:  # most negatives pruned, a few hard ones inside the positives' range
        g = torch.Generator().manual_seed(15)
        labels = (torch.rand(6000, generator=g) < 0.02).long()
        scores = torch.where(labels == 1, torch.randn(6000, generator=g) + 2.0,
                             torch.randn(6000, generator=g) * 0.5 - 4.6)
        scores[:50] = 1.5
        labels[:50] = 0
    check_against_reference(target, scores, labels, method=method)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_ignored_entries_are_not_read(target, method):
    scores, labels = random_problem((2000,), seed=4, p_ignore=0.3)
    expected = run(target, scores, labels, method=method)
    scores[labels == -1] = float("nan")
    loss, grad = run(target, scores, labels, method=method)
    assert grad[labels == -1].abs().sum().item() == 0.0
    assert_same_bits(target, (loss, grad), expected, scores.dtype)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_views(target, method):
    base_scores, base_labels = random_problem((12, 20, 6), seed=5)
    views = {
        "transposed": lambda t: t.transpose(0, 2),
        "permuted": lambda t: t.permute(1, 2, 0),
        "sliced": lambda t: t[:, ::3, 1:],
        "every-other": lambda t: t[:, ::2],
        "expanded-row": lambda t: t[:, :1, :].expand(12, 4, 6),
        "storage-offset": lambda t: t[3:],
    }
    for name, view in views.items():
        scores, labels = view(base_scores), view(base_labels)
        got = check_against_reference(target, scores, labels, method=method)
        contiguous = run(target, scores.contiguous(), labels.contiguous(), method=method)
        assert_same_bits(target, got, contiguous, scores.dtype)
    # scores and labels laid out differently (one of them is copied)
    scores, labels = random_problem((30, 40), seed=6)
    check_against_reference(target, scores.t(), labels.t().contiguous(), method=method)
    check_against_reference(target, scores.t().contiguous(), labels.t(), method=method)


# ---- properties of the result ----------------------------------------------------------------


@targets
@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_sorted_equals_pairwise_at_scale(target, interpolate, seed):
    n = 200_000 if target.gpu else 20_000  # pairwise is O(P N)
    scores, labels = random_problem((n,), seed=seed, p_pos=0.01, p_ignore=0.05, loc=-4.6, scale=0.5 + seed,
                                    dtype=torch.float64)
    loss_s, grad_s = run(target, scores, labels, method="sorted", interpolate=interpolate)
    loss_p, grad_p = run(target, scores, labels, method="pairwise", interpolate=interpolate)
    torch.testing.assert_close(loss_s, loss_p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_s, grad_p, rtol=1e-9, atol=1e-14)


@targets_and_cases(UNGROUPED_AP + cases(("ap", "sorted", "full-size-big-ids")))
@pytest.mark.parametrize("interpolate", [True, False])
def test_balance_invariant(target, case, interpolate):
    # In each ranking the gradient's mass on negatives is +its loss / G, on positives
    # -its loss / G (G: the rankings with a positive), on ignored entries 0; in all, +loss
    # and -loss.
    shape = (8, 500, 1)
    scores, labels = random_problem(shape, seed=11, p_pos=0.05, loc=-4.6, scale=0.5,
                                    dtype=torch.float64)
    ids = group_ids(case.grouping, shape)
    loss, grad = run_case(target, case, scores, labels, ids, interpolate=interpolate)
    if ids is None:
        rankings = {0: (torch.arange(scores.numel()), loss.item())}
    else:
        _, _, rankings = losses.ap_grouped_reference(scores, labels, ids, interpolate=interpolate)
        assert len(rankings) >= 5
    flat_grad, flat_labels = grad.reshape(-1), labels.reshape(-1)
    for idx, loss_g in rankings.values():
        y, g = flat_labels[idx], flat_grad[idx]
        share = loss_g / len(rankings)
        assert g[y == 0].sum().item() == pytest.approx(share, rel=1e-10, abs=1e-15)
        assert g[y == 1].sum().item() == pytest.approx(-share, rel=1e-10, abs=1e-15)
        assert g[y == -1].abs().sum().item() == 0.0
    assert grad[labels == 0].sum().item() == pytest.approx(loss.item(), rel=1e-10)
    assert grad[labels == 1].sum().item() == pytest.approx(-loss.item(), rel=1e-10)


GRAD_OUTPUT_CASES = UNGROUPED_AP + cases(
    ("ap", "sorted", "full-size"), ("rank_sort", None, None), ("rank_sort", None, "full-size"),
    ("alrp", None, None), ("alrp", None, "full-size"))


@targets_and_cases(GRAD_OUTPUT_CASES)
def test_grad_output_scaling(target, case):
    shape = (4, 100, 5)
    scores, second, extra = losses.problem(case.loss, shape, seed=12, p_pos=0.1,
                                           dtype=torch.float64)
    ids = group_ids(case.grouping, shape)
    _, grad = run_case(target, case, scores, second, ids, **extra)
    for factor in (3.0, -3.0):
        x = target.put(scores).detach().clone().requires_grad_(True)
        with target.running():
            kwargs = on_target(target, case, ids, extra)
            value = losses.value(case.loss, x, target.put(second), **kwargs)
            (factor * value).backward()
        torch.testing.assert_close(x.grad.cpu(), factor * grad, rtol=1e-12, atol=0)


@targets_and_cases(UNGROUPED_AP + cases(("ap", "sorted", "per-image")))
def test_shift_invariance(target, case):
    # Scores on a coarse grid: shifted, they stay exact, and so does every difference.
    shape = (6, 500, 1)
    scores, labels = random_problem(shape, seed=13, p_pos=0.05, dtype=torch.float64, ties=True)
    ids = group_ids(case.grouping, shape)
    loss, grad = run_case(target, case, scores, labels, ids)
    shifts = {str(shift): shift for shift in (1000.0, -1e6, 1e9)}
    if ids is not None:  # rankings are independent: each may move by its own amount
        shifts["per ranking"] = (ids.double() * 1e5 - 2e5).expand(shape)
    for name, shift in shifts.items():
        loss_s, grad_s = run_case(target, case, scores + shift, labels, ids)
        def message(m, name=name):
            return f"shift {name}: {m}"

        torch.testing.assert_close(loss_s, loss, rtol=1e-9, atol=1e-12, msg=message)
        torch.testing.assert_close(grad_s, grad, rtol=1e-7, atol=1e-12, msg=message)


# ---- sizes: several grid-stride rounds, both sides of the shared-memory limits ------------------


@targets
@pytest.mark.parametrize("n", [1023, 20_000])
def test_n_not_a_multiple_of_the_block_and_grid_stride_rounds(target, n):
    # On the "small" profile (3 SMs) 20,000 entries take several grid-stride rounds.
    scores, labels = random_problem((n,), seed=n, p_pos=0.004, p_ignore=0.05, loc=-4.6, scale=0.5,
                                    dtype=torch.float64)
    expected = cpu_kernels(scores, labels)
    for method in METHODS:
        assert_same_result(run(target, scores, labels, method=method), expected, torch.float64, rtol=1e-9)


@targets
@pytest.mark.parametrize("side", ["pass1-below", "pass1-above", "pass2-above", "many"])
def test_positive_counts_around_the_shared_memory_limits(target, side):
    limits = SHARED_LIMIT_P[target.profile]
    num_pos = {
        "pass1-below": limits["pass1"],
        "pass1-above": limits["pass1"] + 1,
        "pass2-above": limits["pass2"] + 1,
        "many": 3 * limits["pass2"],
    }[side]
    if num_pos > 3000 and target.emulated:
        pytest.skip("the h100 profile's limits are held by test_h100_shared_memory_limits")
    n = max(4 * num_pos, 3000)
    g = torch.Generator().manual_seed(num_pos)
    labels = torch.zeros(n, dtype=torch.int8)
    labels[torch.randperm(n, generator=g)[:num_pos]] = 1
    scores = torch.randn(n, generator=g, dtype=torch.float64) - 2.0 * (labels == 0)
    expected = cpu_kernels(scores, labels)
    assert_same_result(run(target, scores, labels), expected, torch.float64, rtol=1e-9)
    if num_pos <= 2000:  # pairwise is O(P N)
        assert_same_result(run(target, scores, labels, method="pairwise"), expected, torch.float64, rtol=1e-9)


@pytest.mark.parametrize("target", [t for t in CUDA_KERNEL_TARGETS if t.profile == "h100"], ids=str)
@pytest.mark.parametrize("num_pos", [7000, 7300, 9700])
def test_h100_shared_memory_limits(target, num_pos):
    n = 4 * num_pos
    g = torch.Generator().manual_seed(num_pos)
    labels = torch.zeros(n, dtype=torch.int8)
    labels[torch.randperm(n, generator=g)[:num_pos]] = 1
    scores = torch.randn(n, generator=g, dtype=torch.float64) - 2.0 * (labels == 0)
    assert_same_result(run(target, scores, labels), cpu_kernels(scores, labels), torch.float64, rtol=1e-9)


# ---- input errors ------------------------------------------------------------------------------------


@targets
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["positive", "negative"])
def test_non_finite_scores_raise(target, method, value, where):
    scores, labels = random_problem((2000,), seed=1, p_pos=0.1)
    index = int((labels == (1 if where == "positive" else 0)).nonzero()[3])
    scores[index] = value
    with target.running(), pytest.raises(ValueError, match=rf"finite.*index {index}\b"):
        aploss_cuda.ap_loss(target.put(scores), target.put(labels), method=method)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_which_non_finite_score_is_reported(target, method):
    # The rule on every backend: the first non-finite positive, else the first negative.
    cases = [
        ([float("nan"), float("nan")], [0, 1], 1),
        ([1.0, float("inf"), float("nan"), 0.0], [0, 0, 1, 1], 2),
        ([1.0, float("inf"), float("-inf"), 0.0], [1, 0, 0, 1], 1),
    ]
    for scores, labels, index in cases:
        with target.running(), pytest.raises(ValueError, match=rf"index {index}\b"):
            aploss_cuda.ap_loss(target.put(torch.tensor(scores)), target.put(torch.tensor(labels)),
                                method=method)


INVALID_LABELS = [  # labels, the value reported, its index
    (torch.tensor([0, 1, 2, 0, 3]), "2", 2),
    (torch.tensor([0.0, 1.0, 0.5, -1.0]), "0.5", 2),
    (torch.tensor([0, -2, 1], dtype=torch.int8), "-2", 1),
    (torch.tensor([0, 1, 255], dtype=torch.uint8), "255", 2),
    (torch.tensor([0.0, float("nan"), 1.0]), "nan", 1),
]


@pytest.mark.parametrize(
    ("target", "labels", "bad", "index"),
    [
        pytest.param(target, labels, bad, index, id=f"{bad}-{target}")
        for target in TARGETS
        for labels, bad, index in INVALID_LABELS
        if target.compiles(labels=labels.dtype)
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_invalid_labels_raise(target, method, labels, bad, index):
    scores = torch.randn(labels.shape)
    with target.running(), pytest.raises(ValueError, match=rf"found {bad}\b.*index {index}\b"):
        aploss_cuda.ap_loss(target.put(scores), target.put(labels), method=method)


@targets_and_dtypes("label_dtype", [torch.int64, torch.int32], of="labels")
@pytest.mark.parametrize("method", METHODS)
def test_invalid_labels_name_the_first(target, method, label_dtype):
    # Many blocks see invalid labels; the first one in flat order is reported.
    n = 1 << 20
    labels = torch.zeros(n, dtype=label_dtype)
    labels[::50] = 1
    labels[777_777] = 3
    labels[800_000] = -5
    labels[900_000:] = 7
    with target.running(), pytest.raises(ValueError, match=r"found 3\b.*index 777777\b"):
        aploss_cuda.ap_loss(target.put(torch.randn(n)), target.put(labels), method=method)


# ---- grouped rankings ----------------------------------------------------------------------------------


def group_layouts(shape):
    B, A, C = shape
    g = torch.Generator().manual_seed(4)
    return {
        "per-image": torch.arange(B)[:, None, None],
        "per-class": torch.arange(C) * 1000,
        "random-big-ids": torch.randint(0, 40, shape, generator=g) * (2**40),
        "one": torch.zeros((), dtype=torch.int64),
        "groups-without-positives": torch.arange(B * A * C).reshape(shape) % 97,
    }


@targets
@pytest.mark.parametrize("layout", ["per-image", "per-class", "random-big-ids", "one", "groups-without-positives"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
def test_grouped_rankings(target, layout, dtype):
    shape = (6, 4000, 5) if target.gpu else (6, 400, 5)
    scores, labels = random_problem(shape, seed=11, p_pos=0.01, dtype=dtype)
    ids = group_layouts(shape)[layout]
    expected = cpu_kernels(scores, labels, group_ids=ids)
    got = run(target, scores, labels, group_ids=ids)
    assert_same_result(got, expected, dtype, rtol=1e-10 if dtype == torch.float64 else None)


@targets
def test_grouped_non_finite_negative_raises(target):
    scores, labels = random_problem((3, 2000), seed=12, p_pos=0.05)
    index = int((labels.view(-1) == 0).nonzero()[5])
    scores.view(-1)[index] = float("nan")
    with target.running(), pytest.raises(ValueError, match=rf"finite.*index {index}\b"):
        aploss_cuda.ap_loss(target.put(scores), target.put(labels), group_ids=target.put(torch.arange(3)[:, None]))


# ---- deterministic mode ----------------------------------------------------------------------------------


@targets
@pytest.mark.parametrize("grouped, method", [(False, "sorted"), (False, "pairwise"), (True, "sorted")])
def test_deterministic_mode_is_bitwise_reproducible(target, grouped, method):
    # On a GPU the sorted pass 1's float atomics race more at scale; the CPU's sorted
    # passes split 300,000 entries into several chunks.
    n = 300_000 if target.gpu or (target is CPU and method == "sorted") else 30_000
    scores, labels = random_problem((n,), seed=3, p_pos=0.002, loc=-4.6, scale=0.5)
    ids = torch.arange(6).repeat_interleave(n // 6) if grouped else None
    # One emulated session: on the random-order target every launch draws a new order.
    with deterministic_algorithms(), target.running():
        runs = [loss_and_grad(target.put(scores), target.put(labels), method=method, group_ids=target.put(ids))
                for _ in range(3)]
    for loss, grad in runs[1:]:
        assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])
    # and equal to the default mode's result and the CPU kernels' to the output rounding
    assert_same_result(runs[0], run(target, scores, labels, method=method, group_ids=ids), torch.float32)
    assert_same_result(runs[0], cpu_kernels(scores, labels, method=method, group_ids=ids), torch.float32)
