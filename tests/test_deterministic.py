"""The deterministic pass 1 (csrc/deterministic_pass1.cpp): per-entry records summed
with ATen's deterministic index_add. CUDA uses it under
torch.use_deterministic_algorithms(True) instead of float atomics; here it is held
against the backend's own pass 1 on the CPU, through the test suite's pass 1 probe
(tests/probes; tests/test_devices.py holds the two against each other on every target, a
GPU included)."""

import probes
import pytest
import torch

import aploss_cuda  # noqa: F401  (registers the operators)


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
    gathered = torch.ops.aploss.gather(scores, labels, codes)
    positives, offsets, *_ = torch.ops.aploss.rank_positives(gathered, groups or 1, 1.0)
    return scores, labels, codes, positives, offsets


def pass1_pair(device, grouped, n=200_000, seed=0, **kwargs):
    """(atomics / own kernel, deterministic reduction) difference arrays of one problem."""
    scores, labels, codes, positives, offsets = grouped_inputs(
        device, n, seed, groups=7 if grouped else None, **kwargs
    )
    if not grouped:
        codes = offsets = None
    args = (scores, labels, codes, positives, offsets, 1.0)
    own = probes.pass1_differences(*args, False)
    deterministic = probes.pass1_differences(*args, True)
    return own, deterministic


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", ["plain", "ties", "large"])
def test_deterministic_pass1_equals_the_kernel(grouped, seed, kind):
    kwargs = {"ties": kind == "ties", "offset": 1e12 if kind == "large" else 0.0}
    own, deterministic = pass1_pair("cpu", grouped, n=50_000, seed=seed, **kwargs)
    assert own.shape == deterministic.shape and own.abs().sum() > 0
    # d1 and db are integer counts: exact; da to rounding.
    torch.testing.assert_close(deterministic[0], own[0], rtol=0, atol=0)
    torch.testing.assert_close(deterministic[2], own[2], rtol=0, atol=0)
    torch.testing.assert_close(deterministic[1], own[1], rtol=1e-12, atol=1e-9)


def test_deterministic_pass1_spans_several_chunks():
    # More than 2^21 entries: the records are summed chunk by chunk.
    own, deterministic = pass1_pair("cpu", False, n=(1 << 21) + 12345, seed=3)
    torch.testing.assert_close(deterministic, own, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_negative_poisons_the_sums(value):
    scores, labels, _, positives, _ = grouped_inputs("cpu", 5000, 4)
    scores[(labels == 0).nonzero()[7]] = value
    hist = probes.pass1_differences(scores, labels, None, positives, None, 1.0, True)
    assert torch.isnan(hist).any()


def test_deterministic_pass1_is_bitwise_reproducible():
    runs = [pass1_pair("cpu", True, n=100_000, seed=5)[1] for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
