"""csrc/aploss/math.h's window search, through a test-only operator: the plain binary
search (what the CUDA kernels run) and the bucket-indexed one (what the CPU kernels run)
must both equal the definition, lo = #{q : s - q >= delta}, hi = #{q : s - q > -delta},
evaluated here in float64 exactly as the kernels do."""

import pytest
import torch

import aploss_cuda  # noqa: F401  (loads the operators)


def positives_of(q, delta):
    q = torch.sort(q.double()).values
    starts = torch.ones_like(q, dtype=torch.bool)
    starts[1:] = q.diff() >= 4.0 * delta  # math.h kClusterGap
    start_index = torch.where(starts, torch.arange(len(q)), 0).cummax(0).values
    return torch.stack([q, q[start_index]])


def expected_windows(s, positives, delta):
    q = positives[0]
    diff = s[:, None] - q[None, :]
    lo = (diff >= delta).sum(1)
    hi = (diff > -delta).sum(1)
    shift = positives[1][lo.clamp(max=len(q) - 1)]
    a = torch.where(hi > lo, (s - shift) * (0.5 / delta) + 0.5, torch.zeros_like(s))
    return lo, hi, a


CASES = {
    "gaussian": lambda g: (torch.randn(300, generator=g), torch.randn(5000, generator=g) * 1.5),
    "ties-on-grid": lambda g: (
        (torch.randn(200, generator=g) * 4).round() / 4,
        (torch.randn(4000, generator=g) * 4).round() / 4,
    ),
    "window-corners": lambda g: (
        torch.tensor([0.0, 1.0, 2.0, 2.0, 5.0]),
        torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, -2.0, 7.0, 1e-17, 1.0 - 1e-16]),
    ),
    "huge-magnitudes": lambda g: (
        torch.tensor([-1e30, -1e30, 0.0, 1.0, 1e30]),
        torch.tensor([-1e30, 1e30, 1e30 * (1 + 2**-52), 0.5, -0.5, 0.0, -1e30 * (1 - 2**-52)]),
    ),
    "one-positive": lambda g: (torch.tensor([0.3]), torch.randn(500, generator=g)),
    "far-outside": lambda g: (torch.randn(50, generator=g), torch.tensor([-1e6, 1e6, -1e300, 1e300])),
}


@pytest.mark.parametrize("indexed", [False, True], ids=["plain(GPU)", "indexed(CPU)"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("delta", [0.25, 1.0, 3.0])
def test_windows_match_definition(indexed, case, delta):
    q, s = CASES[case](torch.Generator().manual_seed(0))
    positives = positives_of(q, delta)
    s = s.double()
    lo, hi, a = torch.ops.aploss._find_windows(s, positives, delta, indexed)
    exp_lo, exp_hi, exp_a = expected_windows(s, positives, delta)
    assert torch.equal(lo, exp_lo)
    assert torch.equal(hi, exp_hi)
    torch.testing.assert_close(a, exp_a, rtol=0, atol=0)
