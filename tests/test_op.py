"""The losses' autograd wiring and memory: what the forward keeps, what it and the
backward allocate, no graph without grad, no double backward. (opcheck: tests/test_opcheck.py;
torch.compile: tests/test_compile.py.)"""

import operators
import pytest
import torch
from groupings import group_ids
from helpers import loss_and_grad, random_problem
from losses import LOSSES, problem, run, value

import aploss_cuda

SHAPE = (4, 30, 5)  # (images, anchors, classes)


@pytest.mark.parametrize("grouping", [None, "per-image", "per-class-big-ids", "full-size-huge-ids"])
def test_forward_outputs_are_order_p(grouping):
    # What the forward keeps for the backward is O(P); broadcast ids are never
    # materialised: the codes are shaped like group_ids.
    scores, labels = random_problem(SHAPE, seed=40, p_pos=0.1)
    ids = group_ids(grouping, SHAPE)
    outputs = operators.forward("ap", scores, labels, ids)
    num_pos = int((labels == 1).sum())
    kept = operators.saved("ap", outputs)
    # The CPU's state: five float64 rows of P + 1 (csrc/aploss/kernels.h), as bytes.
    assert kept.state.shape == (5 * 8 * (num_pos + 1),) and kept.state.dtype == torch.uint8
    assert kept.positive_grads.shape == (num_pos, 2) and kept.positive_grads.dtype == torch.float64
    assert kept.classes.numel() == 0  # the CPU's forward keeps no entry classes
    if ids is not None:
        # One id per entry: the intervals the CPU's pass 1 recorded for pass 2, as uint32.
        recorded = ids.numel() == scores.numel()
        assert kept.codes.shape == ids.shape
        assert kept.codes.dtype == (torch.uint32 if recorded else torch.int32)
        assert kept.offsets.dtype == torch.int64 and kept.offsets.dim() == 1
        assert int(kept.offsets[-1]) == num_pos


@pytest.mark.parametrize("grouping", [None, "per-class"])
@pytest.mark.parametrize("loss", LOSSES)
def test_forward_without_grad_keeps_no_graph(loss, grouping):
    scores, second, extra = problem(loss, SHAPE, seed=38, p_pos=0.1)
    ids = group_ids(grouping, SHAPE)
    expected, _ = run(loss, scores, second, group_ids=ids, **extra)
    assert not scores.requires_grad
    got = value(loss, scores, second, group_ids=ids, **extra)
    assert got.grad_fn is None and not got.requires_grad and got.item() == expected.item()
    with torch.no_grad():
        got = value(loss, scores.clone().requires_grad_(True), second, group_ids=ids, **extra)
    assert got.grad_fn is None and got.item() == expected.item()


def test_forward_allocates_nothing_n_sized():
    # The profiler's memory accounting sees every CPU tensor allocation by the op.
    n = 1_000_000
    scores, labels = random_problem((n,), seed=4, p_pos=0.001)
    with torch.no_grad(), torch.profiler.profile(profile_memory=True) as prof:
        aploss_cuda.ap_loss(scores, labels)
    largest = max((e.cpu_memory_usage for e in prof.events()), default=0)
    assert largest < n, f"the forward allocated {largest} bytes at once (N = {n})"


def test_backward_allocates_only_the_gradient():
    n = 1_000_000
    scores, labels = random_problem((n,), seed=5, p_pos=0.001)
    x = scores.clone().requires_grad_(True)
    loss = aploss_cuda.ap_loss(x, labels)
    with torch.profiler.profile(profile_memory=True) as prof:
        loss.backward()
    sizes = sorted((e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0), reverse=True)
    assert sizes and sizes[0] == 4 * n  # the float32 gradient itself
    assert all(s < n for s in sizes[1:] if s != 4 * n)


@pytest.mark.parametrize("loss", LOSSES)
def test_double_backward_is_a_clear_error(loss):
    scores, second, extra = problem(loss, (100,), seed=6, p_pos=0.1, dtype=torch.float64)
    x = scores.requires_grad_(True)
    (grad,) = torch.autograd.grad(value(loss, x, second, **extra), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad.sum().backward()


def test_gradient_flows_through_upstream_ops():
    scores, labels = random_problem((50, 8), seed=7, dtype=torch.float64)
    w = torch.ones(8, dtype=torch.float64, requires_grad=True)
    loss = aploss_cuda.ap_loss(scores * w, labels)
    loss.backward()
    _, grad = loss_and_grad(scores, labels)
    torch.testing.assert_close(w.grad, (grad * scores).sum(0))


def test_info_reports_build():
    info = aploss_cuda.info()
    assert isinstance(info["cuda_kernels_compiled"], bool)
    assert info["cuda_kernels_usable"] == (info["cuda_kernels_compiled"] and torch.cuda.is_available())


def test_vmap_is_a_clear_error():
    scores, labels = random_problem((4, 50), seed=9)
    with pytest.raises(RuntimeError, match="does not support torch.vmap.*group_ids"):
        torch.vmap(aploss_cuda.ap_loss)(scores, labels)
