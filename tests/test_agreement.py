"""The C++ CPU kernels (sorted and pairwise) against the float64 reference."""

import itertools

import pytest
import torch
from helpers import assert_matches_reference, loss_and_grad, random_problem

import aploss_cuda

METHODS = ["sorted", "pairwise"]
LABEL_DTYPES = [torch.int64, torch.int32, torch.int8, torch.uint8, torch.float32, torch.float64]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("delta", [0.1, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("seed", range(4))
def test_random_cases(method, interpolate, delta, seed):
    shape = [(300,), (7, 41), (3, 5, 17), (2, 3, 4, 9)][seed]
    scores, labels = random_problem(shape, seed=seed, p_pos=0.08 + 0.05 * seed, ties=seed % 2 == 1)
    assert_matches_reference(scores, labels, delta=delta, interpolate=interpolate, method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_score_dtypes(method, dtype):
    scores, labels = random_problem((20, 30), seed=1, dtype=dtype, ties=True)
    assert_matches_reference(scores, labels, method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES + [torch.bool])
def test_label_dtypes(method, label_dtype):
    # uint8 and bool cannot hold -1: no ignored entries for them.
    p_ignore = 0.0 if label_dtype in (torch.uint8, torch.bool) else 0.1
    scores, labels = random_problem((500,), seed=2, label_dtype=label_dtype, p_ignore=p_ignore)
    assert_matches_reference(scores, labels, method=method)
    expected, _ = loss_and_grad(scores, labels.to(torch.int64), method=method)
    got, _ = loss_and_grad(scores, labels, method=method)
    assert got.item() == expected.item()


@pytest.mark.parametrize("method", METHODS)
def test_many_exact_ties(method):
    scores = torch.tensor([0.0, 1.0, 0.5]).repeat(100)[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    labels = (torch.arange(300) % 3 == 0).long() - (torch.arange(300) % 7 == 0).long()
    assert_matches_reference(scores, labels, delta=0.5, method=method)
    # every score equal: each H is exactly 1/2
    assert_matches_reference(torch.zeros(50), (torch.arange(50) % 5 == 0).long(), method=method)


@pytest.mark.parametrize("method", METHODS)
def test_window_boundaries(method):
    # Scores exactly delta apart sit on the corners of H: each must count exactly once.
    scores = torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 0, 0, 1, 0])
    assert_matches_reference(scores, labels, delta=1.0, method=method)


@pytest.mark.parametrize("method", METHODS)
def test_odd_shapes_and_tiny_inputs(method):
    for shape in [(1,), (2,), (3,), (1, 1, 1), (0,), (5, 0, 3)]:
        for seed in range(3):
            scores, labels = random_problem(shape, seed=seed, p_pos=0.5, p_ignore=0.2)
            assert_matches_reference(scores, labels, method=method)


@pytest.mark.parametrize("method", METHODS)
def test_zero_dim_scores(method):
    loss, grad = loss_and_grad(torch.tensor(0.3), torch.tensor(1), method=method)
    assert loss.item() == 0.0 and grad.shape == () and grad.item() == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_edge_label_mixes(method):
    scores = torch.randn(64, generator=torch.Generator().manual_seed(3))
    cases = {
        "no positive": torch.zeros(64, dtype=torch.int64),
        "no negative": torch.ones(64, dtype=torch.int64),
        "all ignored": torch.full((64,), -1),
        "one positive": torch.nn.functional.one_hot(torch.tensor(7), 64),
        "one negative": 1 - torch.nn.functional.one_hot(torch.tensor(7), 64),
    }
    for name, labels in cases.items():
        loss, grad = assert_matches_reference(scores, labels, method=method)
        if name != "one negative" and name != "one positive":
            assert loss.item() == 0.0, name
            assert grad.abs().sum().item() == 0.0, name


@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_views(method):
    base_scores, base_labels = random_problem((12, 20, 6), seed=5)
    views = {
        "transposed": lambda t: t.transpose(0, 2),
        "permuted": lambda t: t.permute(1, 2, 0),
        "sliced": lambda t: t[:, ::3, 1:],
        "expanded-row": lambda t: t[:, :1, :].expand(12, 4, 6),
    }
    for name, view in views.items():
        scores, labels = view(base_scores), view(base_labels)
        loss, grad = assert_matches_reference(scores, labels, method=method)
        expected, expected_grad = loss_and_grad(scores.contiguous(), labels.contiguous(), method=method)
        assert loss.item() == expected.item(), name
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


def test_mixed_layouts():
    scores, labels = random_problem((30, 40), seed=6)
    assert_matches_reference(scores.t(), labels.t().contiguous())
    assert_matches_reference(scores.t().contiguous(), labels.t())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("interpolate", [True, False])
def test_sorted_equals_pairwise_at_scale(seed, interpolate):
    scores, labels = random_problem((20000,), seed=seed, p_pos=0.01, p_ignore=0.05, loc=-4.6, scale=0.5 + seed)
    loss_s, grad_s = loss_and_grad(scores.double(), labels, method="sorted", interpolate=interpolate)
    loss_p, grad_p = loss_and_grad(scores.double(), labels, method="pairwise", interpolate=interpolate)
    torch.testing.assert_close(loss_s, loss_p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_s, grad_p, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("interpolate", [True, False])
def test_balance_invariant(method, interpolate):
    scores, labels = random_problem((4000,), seed=11, p_pos=0.05, loc=-4.6, scale=0.5, dtype=torch.float64)
    loss, grad = loss_and_grad(scores, labels, method=method, interpolate=interpolate)
    assert grad[labels == 0].sum().item() == pytest.approx(loss.item(), rel=1e-10)
    assert grad[labels == 1].sum().item() == pytest.approx(-loss.item(), rel=1e-10)
    assert grad[labels == -1].abs().sum().item() == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_grad_output_scaling(method):
    scores, labels = random_problem((2000,), seed=12, dtype=torch.float64)
    _, grad = loss_and_grad(scores, labels, method=method)
    x = scores.clone().requires_grad_(True)
    (3 * aploss_cuda.ap_loss(x, labels, method=method)).backward()
    torch.testing.assert_close(x.grad, 3 * grad, rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_shift_invariance(method):
    scores, labels = random_problem((3000,), seed=13, p_pos=0.05, dtype=torch.float64, ties=True)
    loss, grad = loss_and_grad(scores, labels, method=method)
    for shift in (1000.0, -1e6, 1e9):
        loss_s, grad_s = loss_and_grad(scores + shift, labels, method=method)
        torch.testing.assert_close(loss_s, loss, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad_s, grad, rtol=1e-7, atol=1e-12)


def test_init_regime_matches_reference():
    # A detector at initialisation: every negative within delta of a positive.
    scores, labels = random_problem((6000,), seed=14, p_pos=0.01, p_ignore=0.01, loc=-4.6, scale=0.5)
    for method in METHODS:
        assert_matches_reference(scores, labels, method=method)


def test_trained_regime_pruning_matches_reference():
    g = torch.Generator().manual_seed(15)
    labels = (torch.rand(6000, generator=g) < 0.02).long()
    scores = torch.where(labels == 1, torch.randn(6000, generator=g) + 2.0, torch.randn(6000, generator=g) * 0.5 - 4.6)
    scores[:50] = 1.5  # a few hard negatives inside the positives' range
    labels[:50] = 0
    for method in METHODS:
        assert_matches_reference(scores, labels, method=method)


def test_module_matches_function():
    scores, labels = random_problem((40, 10), seed=16)
    module = aploss_cuda.APLoss(delta=0.5, interpolate=False, method="pairwise")
    assert "delta=0.5" in repr(module)
    assert module(scores, labels).item() == aploss_cuda.ap_loss(
        scores, labels, delta=0.5, interpolate=False, method="pairwise"
    ).item()


def test_many_positives_and_threads():
    # More positives than fit in small caches; chunked accumulation over threads.
    scores, labels = random_problem((200000,), seed=17, p_pos=0.2, ties=True, dtype=torch.float64)
    loss_s, grad_s = loss_and_grad(scores, labels, method="sorted")
    for threads in (1, 3):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            loss_t, grad_t = loss_and_grad(scores, labels, method="sorted")
        finally:
            torch.set_num_threads(old)
        torch.testing.assert_close(loss_t, loss_s, rtol=1e-12, atol=0)
        torch.testing.assert_close(grad_t, grad_s, rtol=1e-10, atol=1e-18)
