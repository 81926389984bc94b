"""The reference itself, against values worked out by hand from the definitions of the loss."""

import pytest
import torch

from aploss_cuda.reference import ap_loss_reference, step


def test_step_function():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(step(x, 1.0), expected)


def test_hand_computed_plain():
    # positives at 2 and 0, a negative at 1, delta = 0.5 (H is 0/1 outside |x| < 0.5).
    # positive 0: rank_pos 2, fp 1 -> prec 2/3; positive 2: prec 1. loss = 1 - (2/3 + 1)/2.
    scores = torch.tensor([2.0, 1.0, 0.0])
    labels = torch.tensor([1, 0, 1])
    loss, grad = ap_loss_reference(scores, labels, delta=0.5)
    assert loss.item() == pytest.approx(1 / 6)
    torch.testing.assert_close(grad, torch.tensor([0.0, 1 / 6, -1 / 6], dtype=torch.float64))


def test_hand_computed_interpolated():
    # positives A=0 (prec 2/3) and B=2 (prec 1/2), negative at 3, delta = 0.5.
    # Interpolation lifts B to 2/3: loss 1/3; c(B) = (1/3)/(1/2), w(A) = w(B) = 1/3.
    scores = torch.tensor([0.0, 2.0, 3.0])
    labels = torch.tensor([1, 1, 0])
    loss, grad = ap_loss_reference(scores, labels, delta=0.5, interpolate=True)
    assert loss.item() == pytest.approx(1 / 3)
    torch.testing.assert_close(grad, torch.tensor([-1 / 6, -1 / 6, 1 / 3], dtype=torch.float64))
    loss, grad = ap_loss_reference(scores, labels, delta=0.5, interpolate=False)
    assert loss.item() == pytest.approx(5 / 12)
    torch.testing.assert_close(grad[:2], torch.tensor([-1 / 6, -1 / 4], dtype=torch.float64))


def test_no_positive_gives_zero():
    loss, grad = ap_loss_reference(torch.randn(10), torch.zeros(10, dtype=torch.int64))
    assert loss.item() == 0.0 and grad.abs().sum().item() == 0.0
