"""What the CPU backend alone has: its thread count does not change the result, and the
module API. Every property the CPU kernels share with the CUDA kernels (against the
float64 reference, sorted against pairwise, balance, shift invariance, layouts, ...) runs
on every device in tests/test_devices.py, the CPU included."""

import torch
from helpers import loss_and_grad, random_problem

import aploss_cuda


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
