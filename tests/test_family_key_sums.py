"""Rank & Sort's sums under a second key (the targets): the CPU's sweep in key order over
blocks of columns and the GPU's tree over the columns (key_window_sums.h), against the
float64 reference on every target, through the losses and (keys of either sign, in both
directions) through the kernel table. Sizes on both sides of the emulated small GPU's
one-block sort (512 positives), of a power of two (the tree's nodes and the root's merge
sort) and of the CPU's column blocks; ties in scores and in targets; every target equal;
groups with one positive."""

import operators
import probes
import pytest
import torch
from devices import TARGETS
from test_family import check_alrp, check_rank_sort

targets = pytest.mark.parametrize("target", TARGETS, ids=str)


def problem(n, num_pos, *, seed, target_levels=None, score_levels=None, equal_target=None):
    """n entries, exactly num_pos positives at random places, a tenth of the rest ignored.
    Targets in [0.05, 1] (some exactly 1), on `target_levels` values when given, all
    `equal_target` when given; scores on `score_levels` values when given."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    if score_levels:
        scores = (scores * score_levels / 4).round() / (score_levels / 4)
    order = torch.randperm(n, generator=g)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[order[:num_pos]] = 1
    labels[order[num_pos:][: (n - num_pos) // 10]] = -1
    iou = torch.rand(n, generator=g, dtype=torch.float64) * 0.95 + 0.05
    if target_levels:
        iou = (iou * target_levels).ceil() / target_levels
    iou[torch.rand(n, generator=g) < 0.1] = 1.0
    if equal_target is not None:
        iou = torch.full((n,), equal_target, dtype=torch.float64)
    targets_ = torch.where(labels == 1, iou, labels.to(torch.float64))
    regression = torch.rand(num_pos, generator=g, dtype=torch.float64)
    return scores, targets_, labels, regression


SIZES = [1, 2, 7, 31, 33, 511, 512, 513, 1100]


@targets
@pytest.mark.parametrize("num_pos", SIZES)
def test_rank_sort_many_positives(target, num_pos):
    n = max(2 * num_pos, 40)
    scores, targets_, _, _ = problem(n, num_pos, seed=num_pos)
    check_rank_sort(target, scores, targets_, delta=0.5)
    scores, targets_, _, _ = problem(n, num_pos, seed=num_pos + 1, target_levels=3, score_levels=8)
    for delta in (0.5, 0.05, 3.0):
        check_rank_sort(target, scores, targets_, delta=delta)


@targets
def test_rank_sort_float32_scores_and_targets(target):
    # Float32 scores and targets beyond the CPU's comparison sort (2,048 keys): both of its
    # sorts (by score, by target) take 32-bit keys.
    scores, targets_, _, _ = problem(5000, 2100, seed=5)
    check_rank_sort(target, scores.float(), targets_.float(), delta=0.5)


@targets
@pytest.mark.parametrize("num_pos", [5, 600])
@pytest.mark.parametrize("equal_target", [1.0, 0.4])
def test_rank_sort_every_target_equal(target, num_pos, equal_target):
    # No positive has a lower target than another: every missorted sum is 0.
    scores, targets_, _, _ = problem(2 * num_pos, num_pos, seed=7, equal_target=equal_target,
                                     score_levels=4)
    loss_equal, _ = check_rank_sort(target, scores, targets_)
    assert loss_equal.isfinite()


@targets
def test_groups_with_one_positive(target):
    # Every group holds one positive (a segment of one column), some several negatives.
    b, n = 6, 60
    scores, targets_, labels, _ = problem(b * n, 0, seed=11)
    labels = labels.view(b, n).clone()
    targets_ = targets_.view(b, n).clone()
    labels[labels == 1] = 0
    for row in range(b):
        labels[row, row] = 1
        targets_[row, row] = 0.2 + 0.1 * row
    targets_ = torch.where(labels == 1, targets_, labels.to(torch.float64))
    scores = scores.view(b, n)
    ids = torch.arange(b).view(b, 1)
    check_rank_sort(target, scores, targets_, group_ids=ids)
    check_alrp(target, scores, labels, torch.rand(b, dtype=torch.float64), group_ids=ids)


@targets
@pytest.mark.parametrize("num_pos", [3, 700])
def test_grouped_many_positives_with_ties(target, num_pos):
    b = 3
    n = 2 * num_pos
    scores, targets_, labels, regression = problem(b * n, b * num_pos, seed=13, target_levels=4,
                                                  score_levels=8)
    ids = torch.arange(b).repeat_interleave(n).view(b, n)
    check_rank_sort(target, scores.view(b, n), targets_.view(b, n), group_ids=ids)
    check_alrp(target, scores.view(b, n), labels.view(b, n), regression,
               group_ids=ids)


def window_sums_reference(positives, offsets, keys, values, delta, below, transpose):
    """kernels.h's positive_window_sums in float64, pair by pair, segment by segment."""
    q = positives[0]
    out = torch.zeros_like(values)
    for u in range(offsets.numel() - 1):
        begin, end = int(offsets[u]), int(offsets[u + 1])
        seg = slice(begin, end)
        diff = q[seg][None, :] - q[seg][:, None]  # [x, m] = q_m - q_x
        h = (diff.T if transpose else diff) / (2 * delta) + 0.5
        h = h.clamp(0.0, 1.0)
        k = keys[seg]
        passes = k[None, :] < k[:, None] if below else k[None, :] >= k[:, None]
        out[:, seg] = ((h * passes)[None] * values[:, None, seg]).sum(-1)
    return out


KEY_KINDS = ["mixed", "non-negative", "non-positive", "zero", "float32", "beyond float32"]


def key_sums_problem(n, num_pos, groups, seed):
    """Scores on few levels (ties), num_pos positives, group codes, keys on few levels
    of either sign, and two rows of values."""
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(n, generator=g, dtype=torch.float64) * 4).round() / 8
    labels = torch.zeros(n, dtype=torch.int64)
    labels[torch.randperm(n, generator=g)[:num_pos]] = 1
    codes = torch.randint(0, groups, (n,), generator=g, dtype=torch.int32)
    keys = (torch.randint(-3, 4, (num_pos,), generator=g) / 3).to(torch.float64)
    values = torch.rand(2, num_pos, generator=g, dtype=torch.float64)
    return scores, labels, codes, keys, values


def assert_sums_match_reference(target, scores, labels, codes, keys, values, groups, row_counts):
    """The kernel table's sums, below and not below, transposed or not, for each count of
    value rows, against the pairwise float64 reference."""
    with target.running():
        put = target.put
        gathered = operators.gather(put(scores), put(labels), put(codes) if groups > 1 else None)
        positives, offsets, *_ = operators.rank_positives(gathered, groups, 1.0)
        for below in (True, False):
            for transpose in (False, True):
                for rows in row_counts:
                    got = probes.positive_window_sums(positives, offsets, put(keys),
                                                      put(values[:rows]), 0.5, below, transpose)
                    want = window_sums_reference(positives.cpu(), offsets.cpu(), keys,
                                                 values[:rows], 0.5, below, transpose)
                    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-9,
                                               msg=f"below={below} transpose={transpose}")


@targets
@pytest.mark.parametrize("kind", KEY_KINDS)
@pytest.mark.parametrize("groups", [1, 3])
def test_sums_under_any_key(target, kind, groups):
    # Keys of either sign, on few levels (ties), in every direction; Rank & Sort passes only
    # its targets (non-negative) and their negatives. "zero" holds -0.0 and +0.0 (equal
    # keys); keys that are all float32 values sort on the CPU as 32-bit keys, others (keys
    # beyond float32's range too) as 64-bit ones (from 2,048 keys).
    scores, labels, codes, keys, values = key_sums_problem(5000, 2500, groups, seed=groups)
    keys = {"mixed": keys, "non-negative": keys.abs(), "non-positive": -keys.abs(),
            "zero": keys * 0, "float32": keys.float().double(),
            "beyond float32": keys.float().double() * 1e300}[kind]
    if kind == "zero":
        assert (keys.signbit() & (keys == 0)).any() and (~keys.signbit()).any()
    assert_sums_match_reference(target, scores, labels, codes, keys, values, groups, (1, 2))


@targets
@pytest.mark.parametrize("num_pos", [1, 2, 3, 4, 1024])
@pytest.mark.parametrize("groups", [1, 3])
def test_sums_at_any_tree_size(target, num_pos, groups):
    # The GPU's tree over the columns has a root of 2^levels > P: P a power of two (a root
    # twice as wide), tiny P, and groups without positives.
    problem = key_sums_problem(2 * num_pos + 5, num_pos, groups, seed=num_pos)
    assert_sums_match_reference(target, *problem, groups, (2,))
