"""The deterministic pass 1 (csrc/deterministic_pass1.cpp): per-entry records summed
with ATen's deterministic index_add. CUDA uses it for the single ranking's stage path under
torch.use_deterministic_algorithms(True) instead of float atomics; here it is held
against the backend's own pass 1 on every target (the CPU in depth, the emulated device
and a GPU on one problem each), through the test suite's pass 1 probe (tests/probes).
Grouped rankings need no such path: CUDA's grouped pass 1 is the same in every thread
order (the last test), and the records refuse group codes."""

import operators
import probes
import pytest
import torch
from devices import CPU, CUDA_KERNEL_TARGETS


def grouped_inputs(device, n, seed, groups=None, ties=False, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    if ties:
        scores = (scores * 4).round() / 4
    scores = scores + offset
    u = torch.rand(n, generator=g)
    labels = (u < 0.03).to(torch.int64)
    labels[(u > 0.9)] = -1
    codes = torch.randint(0, groups or 1, (n,), generator=g, dtype=torch.int32)
    scores, labels, codes = (t.to(device) for t in (scores, labels, codes))
    gathered = operators.gather(scores, labels, codes)
    positives, offsets, *_ = operators.rank_positives(gathered, groups or 1, 1.0)
    return scores, labels, codes, positives, offsets


def pass1_pair(device, n=200_000, seed=0, **kwargs):
    """(atomics / own kernel, deterministic reduction) histograms of one ranking."""
    scores, labels, _, positives, _ = grouped_inputs(device, n, seed, **kwargs)
    args = (scores, labels, None, positives, None, 1.0)
    own = probes.pass1_differences(*args, False)
    deterministic = probes.pass1_differences(*args, True)
    return own, deterministic


# The CPU over seeds and score kinds; the CUDA kernels (emulated, or a GPU) on one problem.
PASS1_CASES = [
    pytest.param(CPU, seed, kind, id=f"{kind}-{seed}-cpu")
    for seed in (0, 1) for kind in ("plain", "ties", "large")
] + [
    pytest.param(target, 0, "plain", id=f"plain-0-{target}") for target in CUDA_KERNEL_TARGETS
]


@pytest.mark.parametrize("target, seed, kind", PASS1_CASES)
def test_deterministic_pass1_equals_the_kernel(target, seed, kind):
    kwargs = {"ties": kind == "ties", "offset": 1e12 if kind == "large" else 0.0}
    n = 200_000 if target.gpu else 50_000 if target is CPU else 20_000
    with target.running():
        own, deterministic = pass1_pair(target.tensor_device, n=n, seed=seed, **kwargs)
    own, deterministic = own.cpu(), deterministic.cpu()
    assert own.shape == deterministic.shape and own.abs().sum() > 0
    if target is not CPU:  # float atomics on a GPU; the emulated device is held the same
        torch.testing.assert_close(deterministic, own, rtol=1e-12, atol=1e-9)
        return
    # d1 and db are integer counts: exact; da to rounding.
    torch.testing.assert_close(deterministic[0], own[0], rtol=0, atol=0)
    torch.testing.assert_close(deterministic[2], own[2], rtol=0, atol=0)
    torch.testing.assert_close(deterministic[1], own[1], rtol=1e-12, atol=1e-9)


def test_deterministic_pass1_spans_several_chunks():
    # More than 2^21 entries: the records are summed chunk by chunk.
    own, deterministic = pass1_pair("cpu", n=(1 << 21) + 12345, seed=3)
    torch.testing.assert_close(deterministic, own, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_negative_poisons_the_sums(value):
    scores, labels, _, positives, _ = grouped_inputs("cpu", 5000, 4)
    scores[(labels == 0).nonzero()[7]] = value
    hist = probes.pass1_differences(scores, labels, None, positives, None, 1.0, True)
    assert torch.isnan(hist).any()


def test_deterministic_pass1_is_bitwise_reproducible():
    runs = [pass1_pair("cpu", n=100_000, seed=5)[1] for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_deterministic_records_refuse_group_codes():
    scores, labels, codes, positives, offsets = grouped_inputs("cpu", 5000, 7, groups=3)
    with pytest.raises(RuntimeError, match="one ranking only"):
        probes.pass1_differences(scores, labels, codes, positives, offsets, 1.0, True)


def test_cuda_grouped_pass1_same_in_every_thread_order():
    # CUDA's grouped pass 1 sums fixed-point offsets per interval and gathers each column of
    # the difference arrays in a fixed order, without float atomics: bitwise the same
    # whatever order the threads and blocks run in (the emulated targets differ in both).
    results = []
    for target in [t for t in CUDA_KERNEL_TARGETS if t.emulated]:
        with target.running():
            scores, labels, codes, positives, offsets = grouped_inputs("cpu", 20_000, 6,
                                                                       groups=7, ties=True)
            results.append(probes.pass1_differences(scores, labels, codes, positives, offsets,
                                                    1.0, False))
    assert results[0].abs().sum() > 0
    for other in results[1:]:
        assert torch.equal(other, results[0])
