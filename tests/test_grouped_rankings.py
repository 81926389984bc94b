"""Grouped rankings on every target, for every loss and every way of giving group_ids:
each against a Python loop of single-ranking calls on the same target (the ungrouped
path, which the other test files hold to the float64 reference), and against the float64
reference where it is fast enough. The groupings cover ids broadcast over the scores
(per image, per class: no N-sized codes on the CPU), full-size ids, ids too sparse to be
codes, one group, groups without positives, thousands of groups of a few entries, and
groups whose positives lie on both sides of the shared-memory limits of the emulated
profiles."""

import pytest
import torch
from devices import TARGETS
from helpers import assert_same_result, random_problem

import aploss_cuda
from aploss_cuda.reference import alrp_loss_reference, ap_loss_reference, rank_sort_loss_reference

SHAPE = (6, 300, 5)  # (images, anchors, classes)


def groupings(shape):
    """{name: group_ids} broadcastable to `shape`."""
    B, A, C = shape
    g = torch.Generator().manual_seed(7)
    return {
        "per-image": torch.arange(B)[:, None, None] * 3,
        "per-class": torch.arange(C),
        "per-image-and-class": torch.arange(B * C).reshape(B, 1, C),
        "full-size": torch.randint(0, 64, shape, generator=g),
        "sparse-ids": torch.randint(0, 64, shape, generator=g) * (2**40) + 5,
        "one-group": torch.tensor(9),
        "without-positives": torch.arange(B * A * C).reshape(shape) % 1999,
        "tiny-groups": torch.arange(B * A * C).reshape(shape) // 3,
    }


def problem(loss, shape, seed, p_pos=0.02, dtype=torch.float32):
    """(scores, labels or targets, extra kwargs) for `loss` in its own input form."""
    scores, labels = random_problem(shape, seed=seed, p_pos=p_pos, dtype=dtype)
    if loss == "rank_sort":
        g = torch.Generator().manual_seed(seed + 1)
        targets = torch.rand(shape, generator=g, dtype=torch.float64).clamp_min(0.05).to(dtype)
        targets = torch.where(labels == 1, targets, labels.to(dtype))
        return scores, targets, {}
    if loss == "alrp":
        g = torch.Generator().manual_seed(seed + 2)
        regression = torch.rand(int((labels == 1).sum()), generator=g, dtype=torch.float64)
        return scores, labels, {"regression_losses": regression.to(dtype)}
    return scores, labels, {}


def run_loss(loss, scores, second, group_ids=None, **extra):
    """(loss, gradient) of one call (aLRP: its classification loss, whose gradient the
    scores get)."""
    x = scores.detach().clone().requires_grad_(True)
    if loss == "ap":
        value = aploss_cuda.ap_loss(x, second, group_ids=group_ids)
    elif loss == "rank_sort":
        value = aploss_cuda.rank_sort_loss(x, second, group_ids=group_ids)
    else:
        value, _ = aploss_cuda.alrp_loss(x, second, extra["regression_losses"], group_ids=group_ids)
    value.backward()
    return value.detach(), x.grad


def loop_of_single_rankings(loss, scores, second, ids, **extra):
    """The grouped result as a user computes it without group_ids: one ungrouped call per
    group with a positive, the mean of their losses, each gradient divided by their number."""
    flat_ids = ids.expand(scores.shape).reshape(-1)
    flat_scores, flat_second = scores.reshape(-1), second.reshape(-1)
    positive = flat_second > 0 if loss == "rank_sort" else flat_second == 1
    positive_order = torch.cumsum(positive.long(), 0) - 1  # aLRP: each positive's regression loss
    members = [torch.nonzero(flat_ids == u).reshape(-1) for u in torch.unique(flat_ids.cpu()).tolist()]
    members = [m for m in members if positive[m].any()]
    total = torch.zeros((), dtype=torch.float64)
    grad = torch.zeros_like(flat_scores)
    for m in members:
        kwargs = {}
        if loss == "alrp":
            kwargs["regression_losses"] = extra["regression_losses"][positive_order[m[positive[m]]]]
        value, g = run_loss(loss, flat_scores[m], flat_second[m], **kwargs)
        total += value.double().cpu()
        grad[m] = g
    count = max(len(members), 1)
    return (total / count).to(scores.dtype), (grad / count).reshape(scores.shape)


def reference(loss, scores, second, ids, **extra):
    """The float64 reference's (loss, gradient) of the grouped call (Rank & Sort: the
    total; aLRP: the classification loss, whose gradient the scores get)."""
    if loss == "ap":
        return None  # ap_loss_reference has no groups: the loop is its grouped reference
    if loss == "rank_sort":
        value, _, _, grad = rank_sort_loss_reference(scores, second, group_ids=ids)
    else:
        value, _, grad = alrp_loss_reference(scores, second, extra["regression_losses"], group_ids=ids)
    return value, grad


LOSSES = ["ap", "rank_sort", "alrp"]


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("grouping", sorted(groupings(SHAPE)))
@pytest.mark.parametrize("loss", LOSSES)
def test_grouped_equals_a_loop_of_single_rankings(target, grouping, loss):
    scores, second, extra = problem(loss, SHAPE, seed=hash(grouping) % 1000)
    ids = groupings(SHAPE)[grouping]
    put = {k: target.put(v) for k, v in extra.items()}
    with target.running():
        got = run_loss(loss, target.put(scores), target.put(second), group_ids=target.put(ids), **put)
        expected = loop_of_single_rankings(loss, target.put(scores), target.put(second), target.put(ids), **put)
    got = tuple(t.cpu() for t in got)
    expected = tuple(t.cpu() for t in expected)
    assert_same_result(got, expected, scores.dtype)
    ref = reference(loss, scores, second, ids, **extra)
    if ref is not None:
        assert_same_result(got, ref, scores.dtype)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("grouping", ["per-image", "per-class", "full-size"])
def test_grouped_ap_loss_against_the_reference(target, dtype, grouping):
    if not target.compiles(scores=dtype):
        pytest.skip(f"{target} does not compile {dtype} scores")
    scores, labels, _ = problem("ap", SHAPE, seed=3, dtype=dtype)
    ids = groupings(SHAPE)[grouping]
    with target.running():
        got = run_loss("ap", target.put(scores), target.put(labels), group_ids=target.put(ids))
    got = tuple(t.cpu() for t in got)
    flat_ids = ids.expand(SHAPE).reshape(-1)
    members = [torch.nonzero(flat_ids == u).reshape(-1) for u in torch.unique(flat_ids).tolist()]
    members = [m for m in members if (labels.reshape(-1)[m] == 1).any()]
    grad = torch.zeros(scores.numel(), dtype=torch.float64)
    total = 0.0
    for m in members:
        value, grad_m = ap_loss_reference(scores.reshape(-1)[m], labels.reshape(-1)[m])
        total += float(value)
        grad[m] = grad_m
    expected = (torch.tensor(total / len(members), dtype=torch.float64), (grad / len(members)).reshape(SHAPE))
    assert_same_result(got, expected, dtype)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("positives_per_group", [60, 700])
def test_large_groups_across_the_shared_memory_limits(target, positives_per_group):
    # 700 positives per group is past every emulated profile's pass 1 and pass 2 tables in
    # shared memory ("small": 255 and 340), 60 within; two groups of each kind of size.
    n_per_group = positives_per_group * 40
    scores, labels = random_problem((4, n_per_group), seed=positives_per_group, p_pos=1 / 40)
    ids = torch.arange(4)[:, None]
    with target.running():
        got = run_loss("ap", target.put(scores), target.put(labels), group_ids=target.put(ids))
        expected = loop_of_single_rankings("ap", target.put(scores), target.put(labels), target.put(ids))
    assert_same_result(tuple(t.cpu() for t in got), tuple(t.cpu() for t in expected), scores.dtype)


@pytest.mark.parametrize("ids_shape", [(6, 1, 1), (300, 1), (1, 300, 1), (5,), (1, 1, 5), (6, 300, 1)])
def test_broadcast_ids_equal_full_size_ids(ids_shape):
    # The CPU reads ids broadcast over one run of dims as one code per row of that run
    # (no N-sized codes); the same ids expanded to full size take the one-code-per-entry
    # path, bit for bit.
    scores, labels = random_problem(SHAPE, seed=5, p_pos=0.02)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 4, ids_shape, generator=g)
    broadcast = run_loss("ap", scores, labels, group_ids=ids)
    full = run_loss("ap", scores, labels, group_ids=ids.expand(SHAPE).contiguous())
    assert torch.equal(broadcast[0], full[0]) and torch.equal(broadcast[1], full[1])


def test_broadcast_ids_allocate_nothing_n_sized():
    # Per image and per class, the call's allocations beyond the gradient are O(P + groups):
    # no int32 code per entry. Full-size ids need their codes: the test's control.
    shape = (8, 15000, 5)
    scores, labels = random_problem(shape, seed=6, p_pos=0.001)
    n_sized = scores.numel() * 4

    def large_allocations(ids):
        x = scores.clone().requires_grad_(True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            aploss_cuda.ap_loss(x, labels, group_ids=ids).backward()
        return [e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage >= n_sized]

    gradient = [scores.numel() * scores.element_size()]
    assert large_allocations(torch.arange(8)[:, None, None]) == gradient
    assert large_allocations(torch.arange(5)) == gradient
    assert len(large_allocations(torch.arange(5).expand(shape).contiguous())) == 2  # gradient, codes
