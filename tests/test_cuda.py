"""What only a real GPU shows: its shared-memory limits, sizes too large for the CPU
tests, streams, a second device, host syncs.

Skipped without a GPU. Every other property runs on the GPU too: tests/test_devices.py
parametrizes its bodies over a `cuda` target when one is present, and
tests/test_op.py (opcheck, torch.compile) over a `cuda` device, and
tests/test_launch_budget.py counts its launches, syncs and allocations. Difference from
the CPU backend, by design (csrc/cuda/*.cu): a single ranking's pass 1 and the grouped
pass 1 sum integers in any order and gather in a fixed one (reproducible), but the stage
path's sorted pass 1 (process_group) accumulates with float64 atomics, so its results may
differ between runs in the last bits; under torch.use_deterministic_algorithms(True) that
pass 1 is replaced by a deterministic reduction (csrc/deterministic_pass1.cpp), bitwise
reproducible.
"""

import warnings

import pytest
import torch
from helpers import KERNEL_METHODS, SCORE_DTYPES, assert_same_result, loss_and_grad, random_problem

import aploss_cuda

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = "cuda"
METHODS = KERNEL_METHODS


def cuda_problem(shape, **kwargs):
    return random_problem(shape, device=DEVICE, **kwargs)


def test_cuda_kernels_are_compiled_in():
    # Fails (rather than skips) when a GPU is present but the build has no CUDA kernels.
    assert aploss_cuda.info()["cuda_kernels_usable"]


# ---- against the CPU kernels: device rounding, the real limits, GPU sizes ---------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", SCORE_DTYPES)
def test_cuda_matches_cpu(method, dtype):
    scores, labels = cuda_problem((50000,), seed=4, dtype=dtype, p_pos=0.02, loc=-3.0, scale=1.5)
    got = loss_and_grad(scores, labels, method=method)
    expected = loss_and_grad(scores.cpu(), labels.cpu(), method=method)
    assert_same_result(got, expected, dtype)


# P around the limits on an H100 (float64 scores): pass 1 sums 2P + 1 intervals of 16
# bytes in shared memory (P <= ~7,260), pass 2 stages their pieces, 32 bytes each for
# float64 keys (P <= ~3,630); the one-block sort holds 16,384 positives, beyond which a
# second round sorts with ATen. 20,000 and 60,000 take it.
@pytest.mark.parametrize("num_pos", [1, 31, 1000, 7000, 7300, 9600, 9700, 20000, 60000])
def test_positive_counts_across_shared_memory_limits(num_pos):
    n = max(4 * num_pos, 10000)
    g = torch.Generator().manual_seed(num_pos)
    labels = torch.zeros(n, dtype=torch.int8)
    labels[torch.randperm(n, generator=g)[:num_pos]] = 1
    scores = torch.randn(n, generator=g, dtype=torch.float64) - 2.0 * (labels == 0)
    got = loss_and_grad(scores.to(DEVICE), labels.to(DEVICE), method="sorted")
    expected = loss_and_grad(scores, labels, method="sorted")
    assert_same_result(got, expected, torch.float64, rtol=1e-8)
    if num_pos <= 20000:  # pairwise is O(P N)
        pairwise = loss_and_grad(scores.to(DEVICE), labels.to(DEVICE), method="pairwise")
        assert_same_result(pairwise, expected, torch.float64, rtol=1e-8)


def test_more_positives_than_the_gather_guess():
    # The gather's first buffer holds max(2^16, N / 256) positives; this has ~150,000.
    scores, labels = cuda_problem((300000,), seed=17, p_pos=0.5, ties=True, dtype=torch.float64)
    got = loss_and_grad(scores, labels, method="sorted")
    expected = loss_and_grad(scores.cpu(), labels.cpu(), method="sorted")
    assert_same_result(got, expected, torch.float64, rtol=1e-8)


def test_large_n_sorted_matches_cpu():
    n = 1 << 27
    g = torch.Generator(device=DEVICE).manual_seed(5)
    scores = torch.randn(n, device=DEVICE, generator=g) * 0.7 - 4.0
    u = torch.rand(n, device=DEVICE, generator=g)
    labels = torch.where(u < 1e-5, 1, torch.where(u < 0.05, -1, 0)).to(torch.int8)
    scores = torch.where(labels == 1, scores + 3.0, scores)
    got = loss_and_grad(scores, labels, method="sorted")
    expected = loss_and_grad(scores.cpu(), labels.cpu(), method="sorted")
    assert_same_result(got, expected, torch.float32)


def test_more_than_two_to_the_31_entries():
    # 64-bit indexing: a small problem placed across flat index 2^31, everything else
    # ignored. The loss and gradient must be those of the small problem alone.
    n = (1 << 31) + (1 << 20)
    small_scores, small_labels = random_problem((3000,), seed=9, p_pos=0.05, dtype=torch.float16)
    at = (1 << 31) - 1500
    try:
        scores = torch.zeros(n, dtype=torch.float16, device=DEVICE)
        labels = torch.full((n,), -1, dtype=torch.int8, device=DEVICE)
    except torch.cuda.OutOfMemoryError:
        pytest.skip("not enough GPU memory for 2^31 entries")
    scores[at : at + 3000] = small_scores.to(DEVICE)
    labels[at : at + 3000] = small_labels.to(torch.int8).to(DEVICE)
    labels[-1] = 0  # a pruned negative at the very end
    scores[-1] = -1000.0
    loss, grad = loss_and_grad(scores, labels, method="sorted")
    expected_loss, expected_grad = loss_and_grad(small_scores, small_labels, method="sorted")
    assert_same_result((loss, grad[at : at + 3000]), (expected_loss, expected_grad), torch.float16)
    assert grad[:at].abs().max().item() == 0.0 and grad[at + 3000 :].abs().max().item() == 0.0
    del scores, labels, grad
    torch.cuda.empty_cache()


# ---- streams, devices, host syncs ------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_non_default_stream(method):
    scores, labels = cuda_problem((100000,), seed=7, p_pos=0.01, loc=-4.6, scale=0.5)
    expected = loss_and_grad(scores, labels, method=method)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        # Keep the side stream busy, then make the inputs on it: kernels launched on any
        # other stream would read them before they exist.
        torch.cuda._sleep(50_000_000)
        s2 = scores * 1.0
        l2 = labels.clone()
        got = loss_and_grad(s2, l2, method=method)
    stream.synchronize()
    assert_same_result(got, expected, scores.dtype)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("method", METHODS)
def test_second_device(method):
    scores, labels = random_problem((20000,), seed=8, p_pos=0.02, dtype=torch.float64)
    expected = loss_and_grad(scores, labels, method=method)
    torch.cuda.set_device(0)
    got = loss_and_grad(scores.to("cuda:1"), labels.to("cuda:1"), method=method)
    assert got[0].device == torch.device("cuda:1") and got[1].device == torch.device("cuda:1")
    assert torch.cuda.current_device() == 0
    assert_same_result(got, expected, torch.float64, rtol=1e-9)


def test_one_host_sync_in_forward_none_in_backward():
    # The design: one read of the workspace's meta words, after the positive stage, is the
    # forward's only sync (tests/test_launch_budget.py counts it on every commit).
    scores, labels = cuda_problem((100000,), seed=3, p_pos=0.01)
    x = scores.clone().requires_grad_(True)
    aploss_cuda.ap_loss(x, labels)  # warm-up (lazy initialisation may sync)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    try:
        torch.cuda.set_sync_debug_mode("warn")
        with pytest.warns(UserWarning) as forward_warnings:
            loss = aploss_cuda.ap_loss(x, labels)
        syncs = [w for w in forward_warnings if "synchroniz" in str(w.message)]
        assert len(syncs) == 1, [str(w.message) for w in syncs]
        with warnings.catch_warnings(record=True) as backward_warnings:
            warnings.simplefilter("always")
            loss.backward()
        syncs = [w for w in backward_warnings if "synchroniz" in str(w.message)]
        assert not syncs, [str(w.message) for w in syncs]
    finally:
        torch.cuda.set_sync_debug_mode(previous)
