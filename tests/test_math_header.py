"""The window searches, through the test suite's probes (tests/probes): math.h's plain binary
search (what the CUDA kernels run), its bucket-indexed one and intervals.h's
threshold count in float32 or float64 keys (the ungrouped CPU kernels) must all equal the
definition, lo = #{q : s - q >= delta}, hi = #{q : s - q > -delta}, evaluated here in
float64 exactly as the kernels do."""

import probes
import pytest
import torch


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
    lo, hi, a = probes.find_windows(s, positives, delta, indexed)
    exp_lo, exp_hi, exp_a = expected_windows(s, positives, delta)
    assert torch.equal(lo, exp_lo)
    assert torch.equal(hi, exp_hi)
    torch.testing.assert_close(a, exp_a, rtol=0, atol=0)


def threshold_neighbours(q, delta, key):
    """Keys at and a few steps either side of every q and q +- delta in the key type:
    where the interval thresholds lie."""
    info = torch.finfo(key)
    around = torch.cat([q + delta, q - delta, q]).to(key)
    around = around[torch.isfinite(around)]
    keys = [around]
    for direction in (info.max, -info.max):
        step = around
        for _ in range(3):
            step = torch.nextafter(step, torch.full_like(step, direction))
            keys.append(step)
    return torch.cat(keys)


@pytest.mark.parametrize("key", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("delta", [1e-3, 0.25, 1.0, 3.0])
@pytest.mark.parametrize("q_in_key", [True, False], ids=["q-as-keys", "q-any-double"])
def test_intervals_match_definition(key, case, delta, q_in_key):
    q, s = CASES[case](torch.Generator().manual_seed(0))
    q = q.double()
    if q_in_key:  # the positives are scores of the key type (the passes' usual case)
        q = q.to(key).double()
    else:  # not representable in float32: the thresholds must still be exact
        q = q + q.abs() * 2.0**-40
    positives = positives_of(q, delta)
    s = torch.cat([s.double().to(key), threshold_neighbours(positives[0], delta, key)])
    s = s[torch.isfinite(s)]
    lo, hi = probes.find_intervals(s, positives, delta)
    exp_lo, exp_hi, _ = expected_windows(s.double(), positives, delta)
    assert torch.equal(lo, exp_lo)
    assert torch.equal(hi, exp_hi)


@pytest.mark.parametrize("key", [torch.float32, torch.float64])
def test_intervals_of_crowded_buckets(key):
    # Many positives on a few values: buckets with many thresholds, searched past the
    # first candidates; and one positive far from the rest, so that the buckets are wide.
    q = torch.cat([torch.full((50,), 0.5), torch.full((30,), 0.75), torch.linspace(-1, 1, 20),
                   torch.tensor([1e4])]).double()
    delta = 0.125
    positives = positives_of(q, delta)
    s = torch.cat([torch.linspace(-2, 2, 4001, dtype=torch.float64).to(key),
                   threshold_neighbours(positives[0], delta, key)])
    lo, hi = probes.find_intervals(s, positives, delta)
    exp_lo, exp_hi, _ = expected_windows(s.double(), positives, delta)
    assert torch.equal(lo, exp_lo)
    assert torch.equal(hi, exp_hi)
