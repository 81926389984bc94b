"""Bad input gets a clear Python exception; edge inputs get defined results."""

import math

import operators
import pytest
import torch
from helpers import KERNEL_METHODS, assert_matches_reference, loss_and_grad, random_problem

import aploss_cuda

METHODS = KERNEL_METHODS


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)|\(4, 3\).*\(3, 4\)"):
        aploss_cuda.ap_loss(torch.randn(3, 4), torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="broadcast"):
        aploss_cuda.ap_loss(torch.randn(3, 4), torch.zeros(4, dtype=torch.int64))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_floating_scores_name_the_dtype(dtype):
    with pytest.raises(TypeError, match=str(dtype)):
        aploss_cuda.ap_loss(torch.zeros(5, dtype=dtype), torch.zeros(5, dtype=torch.int64))


def test_unsupported_label_dtype():
    with pytest.raises(TypeError, match="int16"):
        aploss_cuda.ap_loss(torch.randn(5), torch.zeros(5, dtype=torch.int16))
    with pytest.raises(TypeError, match="Short"):  # the raw op checks too
        operators.forward("ap", torch.randn(5), torch.zeros(5, dtype=torch.int16))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "labels, bad",
    [
        (torch.tensor([0, 1, 2, 0, 3]), "2"),
        (torch.tensor([0.0, 1.0, 0.5, -1.0]), "0.5"),
        (torch.tensor([0, -2, 1], dtype=torch.int8), "-2"),
        (torch.tensor([0, 1, 255], dtype=torch.uint8), "255"),
        (torch.tensor([0.0, float("nan"), 1.0]), "nan"),
    ],
)
def test_invalid_label_values_name_the_first(method, labels, bad):
    scores = torch.randn(labels.shape)
    with pytest.raises(ValueError, match=rf"found {bad}\b.*index {int((labels.double() != labels.double().clamp(-1, 1).round()).nonzero()[0]) if bad != 'nan' else 1}"):
        aploss_cuda.ap_loss(scores, labels, method=method)


def test_bool_labels_are_positive_negative():
    scores, labels = random_problem((300,), seed=0, p_ignore=0.0)
    a, ga = loss_and_grad(scores, labels == 1)
    b, gb = loss_and_grad(scores, labels)
    assert a.item() == b.item()
    torch.testing.assert_close(ga, gb, rtol=0, atol=0)


def test_non_finite_ignored_score_is_not_read():
    scores, labels = random_problem((200,), seed=2, p_ignore=0.2)
    index = int((labels == -1).nonzero()[0])
    expected, expected_grad = loss_and_grad(scores, labels)
    scores[index] = float("nan")
    loss, grad = loss_and_grad(scores, labels)
    assert loss.item() == expected.item() and grad[index].item() == 0.0


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_bad_delta(delta):
    with pytest.raises(ValueError, match="delta"):
        aploss_cuda.ap_loss(torch.randn(4), torch.ones(4, dtype=torch.int64), delta=delta)
    with pytest.raises(ValueError, match="delta"):
        aploss_cuda.APLoss(delta=delta)


def test_delta_of_wrong_type():
    with pytest.raises(TypeError, match="delta"):
        aploss_cuda.ap_loss(torch.randn(4), torch.ones(4, dtype=torch.int64), delta="1")


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="auto.*sorted.*pairwise"):
        aploss_cuda.ap_loss(torch.randn(4), torch.ones(4, dtype=torch.int64), method="fast")
    with pytest.raises(ValueError, match="auto.*sorted.*pairwise"):  # the raw op too
        operators.forward("ap", torch.randn(4), torch.ones(4, dtype=torch.int64), method="fast")


def test_different_devices_name_both():
    with pytest.raises(ValueError, match="meta.*cpu|cpu.*meta"):
        aploss_cuda.ap_loss(torch.randn(4), torch.ones(4, dtype=torch.int64, device="meta"))


def test_not_tensors():
    with pytest.raises(TypeError, match="tensors"):
        aploss_cuda.ap_loss([0.1, 0.2], torch.ones(2, dtype=torch.int64))


@pytest.mark.parametrize("method", METHODS)
def test_empty_input_is_zero_and_differentiable(method):
    x = torch.randn(0, 7, requires_grad=True)
    loss = aploss_cuda.ap_loss(x, torch.zeros(0, 7, dtype=torch.int64), method=method)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert x.grad.shape == (0, 7)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_finite_scores(method, dtype):
    big = 1e30
    tiny = torch.finfo(dtype).tiny / 4  # subnormal
    scores = torch.tensor([big, -big, tiny, -tiny, 0.0, 1.0, big, -big, 3 * tiny, 0.5], dtype=dtype)
    labels = torch.tensor([1, 0, 1, 0, 0, 1, 0, 1, 0, 0])
    loss, grad = assert_matches_reference(scores, labels, method=method)
    assert math.isfinite(loss.item()) and torch.isfinite(grad).all()


def test_float16_negative_gradients_underflow_without_a_scaler():
    # docs/input_contract.md: float16 gradients below ~3e-8 flush to 0; a gradient scaler
    # (torch.amp.GradScaler) keeps them.
    g = torch.Generator().manual_seed(0)
    n = 1 << 16
    s = torch.randn(n, generator=g) * 0.5 - 4.6
    y = (torch.rand(n, generator=g) < 1e-3).long()
    y[0] = 1
    grads = {}
    for scale in (1.0, 65536.0):
        x = s.half().requires_grad_()
        (aploss_cuda.ap_loss(x, y).float() * 1e-5 * scale).backward()
        grads[scale] = x.grad[y == 0]
    assert (grads[1.0] == 0).all() and (grads[65536.0] > 0).float().mean() > 0.99
