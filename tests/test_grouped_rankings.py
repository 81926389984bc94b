"""Grouped rankings on every target, for every loss and every way of giving group_ids:
each against a Python loop of single-ranking calls on the same target (the ungrouped
path), and against the float64 reference of the grouped call (AP-loss's: one
ap_loss_reference call per group). The groupings cover ids broadcast over the scores
(per image, per class: no N-sized codes on the CPU), full-size ids, ids too sparse to be
codes, one group, groups without positives, thousands of groups of a few entries,
groups whose positives lie on both sides of the shared-memory limits of the emulated
profiles, and codes out of range handed to the passes' operators."""

import operators
import pytest
import torch
from devices import TARGETS
from groupings import group_ids
from helpers import assert_same_result, random_problem
from losses import LOSSES, loop_of_single_rankings, problem, reference, run

import aploss_cuda

SHAPE = (6, 300, 5)  # (images, anchors, classes)
GROUPINGS = ["per-image", "per-class", "per-image-and-class", "full-size-64-groups",
             "full-size-64-huge-ids", "one-group", "without-positives", "tiny-groups"]


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("loss", LOSSES)
def test_grouped_equals_a_loop_of_single_rankings(target, grouping, loss):
    scores, second, extra = problem(loss, SHAPE, seed=sum(map(ord, grouping)) % 1000)
    ids = group_ids(grouping, SHAPE)
    put = {k: target.put(v) for k, v in extra.items()}
    with target.running():
        got = run(loss, target.put(scores), target.put(second), group_ids=target.put(ids), **put)
        expected = loop_of_single_rankings(loss, target.put(scores), target.put(second),
                                           target.put(ids), **put)
    got = tuple(t.cpu() for t in got)
    assert_same_result(got, tuple(t.cpu() for t in expected), scores.dtype)
    # and the float64 reference of the grouped call
    assert_same_result(got, reference(loss, scores, second, ids, **extra), scores.dtype)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("positives_per_group", [60, 700])
def test_large_groups_across_the_shared_memory_limits(target, positives_per_group):
    # 700 positives per group is past every emulated profile's pass 1 and pass 2 tables in
    # shared memory ("small": 255 and 340), 60 within; two groups of each kind of size.
    n_per_group = positives_per_group * 40
    scores, labels = random_problem((4, n_per_group), seed=positives_per_group, p_pos=1 / 40)
    ids = torch.arange(4)[:, None]
    with target.running():
        got = run("ap", target.put(scores), target.put(labels), group_ids=target.put(ids))
        expected = loop_of_single_rankings("ap", target.put(scores), target.put(labels), target.put(ids))
    assert_same_result(tuple(t.cpu() for t in got), tuple(t.cpu() for t in expected), scores.dtype)


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_codes_out_of_range_count_nothing(target):
    # The public pass1 and backward take any int32 codes: a negative whose code is out of
    # [0, num_groups) belongs to no group, so it counts nothing in pass 1 and gets no
    # gradient in pass 2, exactly as if it were ignored.
    n, groups = 9000, 40
    scores, labels = random_problem((n,), seed=11, p_pos=0.01, p_ignore=0.05)
    ids = torch.randint(0, groups, (n,), generator=torch.Generator().manual_seed(11))
    negatives = (labels == 0).nonzero().flatten()
    broken = negatives[torch.randperm(len(negatives), generator=torch.Generator().manual_seed(3))
                       [:500]]
    bad = torch.tensor([groups, groups + 7, 2**31 - 1, -1, -(2**31)], dtype=torch.int32)
    ignored = labels.clone()
    ignored[broken] = -1
    # Ids in [0, groups) are their own codes.
    scores, labels, ignored, ids, own_codes = map(target.put, (scores, labels, ignored, ids,
                                                               ids.to(torch.int32)))
    with target.running():
        outputs = operators.saved("ap", operators.forward("ap", scores, labels, ids))
        codes = own_codes.clone()
        codes[target.put(broken)] = target.put(bad.repeat(len(broken) // len(bad) + 1)
                                               [:len(broken)])
        gathered = operators.gather(scores, labels, own_codes)
        num_groups = outputs.offsets.numel() - 1
        positives, offsets, group, *_ = operators.rank_positives(gathered, num_groups, 1.0)

        def passes(labels, codes):
            pass1 = operators.pass1(scores, labels, codes, positives, offsets, group, 1.0)
            grad = operators.backward(torch.ones((), device=scores.device), scores, labels,
                                      outputs.classes, codes, outputs.state, outputs.offsets,
                                      outputs.positive_grads, 1.0)
            return pass1.cpu(), grad.cpu()

        pass1, grad = passes(labels, codes)
        expected_pass1, expected_grad = passes(ignored, own_codes)
    # A GPU's float64 atomics may sum pass 1 in another order; every other target exactly.
    tolerance = dict(rtol=1e-12, atol=1e-12) if target.gpu else dict(rtol=0, atol=0)
    torch.testing.assert_close(pass1, expected_pass1, **tolerance)
    assert torch.equal(grad, expected_grad) and grad[broken].eq(0).all()


@pytest.mark.parametrize("ids_shape", [(6, 1, 1), (300, 1), (1, 300, 1), (5,), (1, 1, 5), (6, 300, 1)])
def test_broadcast_ids_equal_full_size_ids(ids_shape):
    # The CPU reads ids broadcast over one run of dims as one code per row of that run
    # (no N-sized codes); the same ids expanded to full size take the one-code-per-entry
    # path, bit for bit.
    scores, labels = random_problem(SHAPE, seed=5, p_pos=0.02)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 4, ids_shape, generator=g)
    broadcast = run("ap", scores, labels, group_ids=ids)
    full = run("ap", scores, labels, group_ids=ids.expand(SHAPE).contiguous())
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
