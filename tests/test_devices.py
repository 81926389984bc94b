"""One body per property, run on every target (tests/devices.py): the CPU kernels, the
CUDA kernels on the emulated device (two profiles, several thread and block orders), and
a real GPU when present. Expected values come from the float64 reference or, for sizes
it is too slow for, from the CPU kernels run outside the target."""

import pytest
import torch
from devices import CUDA_KERNEL_TARGETS, SHARED_LIMIT_P, TARGETS
from helpers import assert_same_result, loss_and_grad, random_problem

import aploss_cuda
from aploss_cuda.reference import ap_loss_reference

METHODS = ["sorted", "pairwise"]
targets = pytest.mark.parametrize("target", TARGETS, ids=str)


def run(target, scores, labels, **kwargs):
    """Loss and gradient computed on the target, returned on the CPU."""
    with target.running():
        loss, grad = loss_and_grad(target.put(scores), target.put(labels), **kwargs)
    return loss.cpu(), grad.cpu()


def check_against_reference(target, scores, labels, delta=1.0, interpolate=True, method="sorted"):
    got = run(target, scores, labels, delta=delta, interpolate=interpolate, method=method)
    assert_same_result(got, ap_loss_reference(scores, labels, delta=delta, interpolate=interpolate), scores.dtype)
    return got


def cpu_kernels(scores, labels, **kwargs):
    return loss_and_grad(scores, labels, **kwargs)


# ---- against the float64 reference ----------------------------------------------------------


@targets
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("case", range(3))
def test_random_cases(target, method, interpolate, case):
    shape, delta = [((300,), 1.0), ((7, 41), 0.1), ((3, 5, 17), 3.0)][case]
    scores, labels = random_problem(shape, seed=case, p_pos=0.08 + 0.05 * case, ties=case == 1)
    check_against_reference(target, scores, labels, delta=delta, interpolate=interpolate, method=method)


@targets
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_score_dtypes(target, method, dtype):
    scores, labels = random_problem((20, 30), seed=1, dtype=dtype, ties=True)
    loss, grad = check_against_reference(target, scores, labels, method=method)
    assert loss.dtype == dtype and grad.dtype == dtype


@targets
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("label_dtype", [torch.bool, torch.int8, torch.int64])
def test_label_dtypes(target, method, label_dtype):
    p_ignore = 0.0 if label_dtype == torch.bool else 0.1
    scores, labels = random_problem((500,), seed=2, label_dtype=label_dtype, p_ignore=p_ignore)
    got = check_against_reference(target, scores, labels, method=method)
    assert_same_result(got, run(target, scores, labels.to(torch.int64), method=method), scores.dtype, rtol=0)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_ties_and_window_corners(target, method):
    # Scores exactly delta and 2 delta apart, positives tied with negatives and each other.
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.0, 1.0, 0.5]).repeat(100)[torch.randperm(300, generator=g)]
    labels = (torch.arange(300) % 3 == 0).long() - (torch.arange(300) % 7 == 0).long()
    check_against_reference(target, scores, labels, delta=0.5, method=method)
    corners = torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5], dtype=torch.float64)
    check_against_reference(target, corners, torch.tensor([1, 0, 0, 0, 0, 1, 0]), method=method)
    check_against_reference(target, torch.zeros(50), (torch.arange(50) % 5 == 0).long(), method=method)


@targets
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_and_tiny_scores(target, method, dtype):
    big, tiny = 1e30, torch.finfo(dtype).tiny / 4  # tiny: subnormal
    scores = torch.tensor([big, -big, tiny, -tiny, 0.0, 1.0, big, -big, 3 * tiny, 0.5], dtype=dtype)
    labels = torch.tensor([1, 0, 1, 0, 0, 1, 0, 1, 0, 0])
    loss, grad = check_against_reference(target, scores, labels, method=method)
    assert torch.isfinite(loss).item() and torch.isfinite(grad).all().item()
    # A cluster far from zero: linear terms relative to the cluster shift.
    scores, labels = random_problem((400,), seed=5, dtype=torch.float64, ties=True, loc=1e12)
    check_against_reference(target, scores, labels, method=method)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_label_mixes_and_tiny_inputs(target, method):
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
    for shape in [(1,), (2,), (3,), (0,), (5, 0, 3)]:
        scores, labels = random_problem(shape, seed=1, p_pos=0.5, p_ignore=0.2)
        check_against_reference(target, scores, labels, method=method)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_ignored_entries_are_not_read(target, method):
    scores, labels = random_problem((400,), seed=4, p_ignore=0.3)
    expected = run(target, scores, labels, method=method)
    scores[labels == -1] = float("nan")
    loss, grad = run(target, scores, labels, method=method)
    assert loss.item() == expected[0].item()
    assert grad[labels == -1].abs().sum().item() == 0.0
    torch.testing.assert_close(grad, expected[1], rtol=0, atol=0)


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
    scores, labels = random_problem((200,), seed=1, p_pos=0.2)
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


@targets
@pytest.mark.parametrize("method", METHODS)
def test_invalid_labels_name_the_first(target, method):
    labels = torch.zeros(5000, dtype=torch.int64)
    labels[::50] = 1
    labels[3217] = 3
    labels[4000] = -5
    with target.running(), pytest.raises(ValueError, match=r"found 3\b.*index 3217"):
        aploss_cuda.ap_loss(target.put(torch.randn(5000)), target.put(labels), method=method)


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
def test_grouped_rankings(target, layout):
    shape = (6, 400, 5)
    scores, labels = random_problem(shape, seed=11, p_pos=0.01, dtype=torch.float64)
    ids = group_layouts(shape)[layout]
    expected = cpu_kernels(scores, labels, group_ids=ids)
    with target.running():
        got = loss_and_grad(target.put(scores), target.put(labels), group_ids=target.put(ids))
    assert_same_result(got, expected, torch.float64, rtol=1e-10)


@targets
def test_grouped_non_finite_negative_raises(target):
    scores, labels = random_problem((3, 2000), seed=12, p_pos=0.05)
    index = int((labels.view(-1) == 0).nonzero()[5])
    scores.view(-1)[index] = float("nan")
    with target.running(), pytest.raises(ValueError, match=rf"finite.*index {index}\b"):
        aploss_cuda.ap_loss(target.put(scores), target.put(labels), group_ids=target.put(torch.arange(3)[:, None]))


# ---- deterministic pass 1, properties -------------------------------------------------------------------


@targets
@pytest.mark.parametrize("grouped", [False, True])
def test_deterministic_pass1_equals_the_kernel(target, grouped):
    from test_deterministic import pass1_pair

    with target.running():
        own, deterministic = pass1_pair(target.tensor_device, grouped, n=20_000)
    torch.testing.assert_close(deterministic.cpu(), own.cpu(), rtol=1e-12, atol=1e-9)


@targets
@pytest.mark.parametrize("grouped", [False, True])
def test_deterministic_mode_is_bitwise_reproducible(target, grouped):
    scores, labels = random_problem((30_000,), seed=3, p_pos=0.002, loc=-4.6, scale=0.5)
    ids = torch.arange(6).repeat_interleave(5000) if grouped else None
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with target.running():
            runs = [loss_and_grad(target.put(scores), target.put(labels), group_ids=target.put(ids))
                    for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert_same_result(runs[0], cpu_kernels(scores, labels, group_ids=ids), torch.float32)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_balance_and_grad_output_scaling(target, method):
    scores, labels = random_problem((4000,), seed=11, p_pos=0.05, loc=-4.6, scale=0.5, dtype=torch.float64)
    loss, grad = run(target, scores, labels, method=method)
    assert grad[labels == 0].sum().item() == pytest.approx(loss.item(), rel=1e-10)
    assert grad[labels == 1].sum().item() == pytest.approx(-loss.item(), rel=1e-10)
    assert grad[labels == -1].abs().sum().item() == 0.0
    x = target.put(scores).requires_grad_(True)
    with target.running():
        (3 * aploss_cuda.ap_loss(x, target.put(labels), method=method)).backward()
    torch.testing.assert_close(x.grad.cpu(), 3 * grad, rtol=1e-12, atol=0)


@targets
@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_views(target, method):
    base_scores, base_labels = random_problem((12, 20, 6), seed=5)
    expected = cpu_kernels(base_scores.contiguous(), base_labels.contiguous(), method=method)
    views = {
        "transpose": (lambda t: t.transpose(0, 2), lambda g: g.transpose(0, 2)),
        "slice": (lambda t: t[:, ::2], None),
    }
    for name, (view, undo) in views.items():
        got = run(target, view(base_scores), view(base_labels), method=method)
        if undo is not None:
            assert_same_result((got[0], undo(got[1])), expected, torch.float32)
        else:
            assert_same_result(got, cpu_kernels(view(base_scores).contiguous(), view(base_labels).contiguous(),
                                          method=method), torch.float32)
