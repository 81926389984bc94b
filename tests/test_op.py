"""Operator registration: opcheck, torch.compile, autograd wiring, memory of the forward."""

import pytest
import torch
from helpers import loss_and_grad, opcheck, random_problem

import aploss_cuda

# The operators' registration per dispatch key: each body runs for every backend present.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _forward_args(scores, labels, method="sorted"):
    return ("ap_loss", scores, labels, None, None, 1.0, True, method)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["sorted", "pairwise"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_forward(device, method, dtype):
    scores, labels = random_problem((6, 50), seed=0, dtype=dtype, device=device)
    for requires_grad in (False, True):
        args = _forward_args(scores.clone().requires_grad_(requires_grad), labels, method)
        opcheck(torch.ops.aploss.loss_forward.default, args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["sorted", "pairwise"])
def test_opcheck_backward(device, method):
    scores, labels = random_problem((6, 50), seed=1, device=device)
    _, _, state, offsets, _, _, positive_grads, classes = torch.ops.aploss.loss_forward(
        *_forward_args(scores, labels, method))
    grad_output = torch.tensor(2.0, device=device)
    args = (grad_output, scores, labels, classes, None, state, offsets, positive_grads, 1.0, method)
    opcheck(torch.ops.aploss.loss_backward.default, args)


def test_opcheck_no_positive():
    scores = torch.randn(40, requires_grad=True)
    labels = torch.zeros(40, dtype=torch.int64)
    opcheck(torch.ops.aploss.loss_forward.default, _forward_args(scores, labels))


def test_state_is_order_p():
    scores, labels = random_problem((10000,), seed=2, p_pos=0.01)
    _, _, state, _, _, _, positive_grads, classes = torch.ops.aploss.loss_forward(
        *_forward_args(scores, labels))
    num_pos = int((labels == 1).sum())
    # The CPU's state: five float64 rows of P + 1 (csrc/aploss/kernels.h), as bytes.
    assert state.shape == (5 * 8 * (num_pos + 1),) and state.dtype == torch.uint8
    assert positive_grads.shape == (num_pos, 2) and positive_grads.dtype == torch.float64
    assert classes.numel() == 0  # the CPU's pass 2 reads the labels


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grouped", [False, True])
def test_opcheck_stages(device, grouped):
    # The stage operators aploss_cuda.distributed composes: each against its fake.
    scores, labels = random_problem((6, 50), seed=8, dtype=torch.float64, device=device)
    codes = (torch.arange(50, device=device) % 3).to(torch.int32) if grouped else None
    num_groups = 3 if grouped else 1
    gathered = torch.ops.aploss.gather(scores, labels, codes)
    opcheck(torch.ops.aploss.gather.default, (scores, labels, codes))
    opcheck(torch.ops.aploss.rank_positives.default, (gathered, num_groups, 1.0))
    positives, offsets, positive_group, positions, memory_rank = torch.ops.aploss.rank_positives(
        gathered, num_groups, 1.0)
    args = (scores, labels, codes, positives, offsets, positive_group, 1.0, "sorted")
    opcheck(torch.ops.aploss.pass1.default, args)
    fp = torch.ops.aploss.pass1(*args)
    args = ("ap_loss", positives, offsets, positive_group, positions, memory_rank, fp, None, 1.0,
            True, torch.float64, "sorted")
    opcheck(torch.ops.aploss.positive_stage.default, args)
    loss, _, _, positive_grads = torch.ops.aploss.positive_stage(*args)
    assert torch.equal(positive_grads[:, 0], positions.double())
    expected = aploss_cuda.ap_loss(
        scores, labels, group_ids=codes.long() if grouped else None
    )
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(device, dynamic):
    torch._dynamo.reset()

    def step(scores, labels):
        # The default delta too: dynamic=True traces it as a symbolic float.
        return aploss_cuda.ap_loss(scores.sigmoid().logit(), labels, delta=0.5) * 2.0 + (
            aploss_cuda.ap_loss(scores, labels)
        )

    compiled = torch.compile(step, fullgraph=True, dynamic=dynamic)
    for seed, shape in enumerate([(8, 30), (8, 30), (5, 44)]):
        scores, labels = random_problem(shape, seed=seed, dtype=torch.float64, device=device)
        x_eager = scores.clone().requires_grad_(True)
        x_comp = scores.clone().requires_grad_(True)
        eager = step(x_eager, labels)
        got = compiled(x_comp, labels)
        eager.backward()
        got.backward()
        torch.testing.assert_close(got, eager, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x_comp.grad, x_eager.grad, rtol=1e-10, atol=1e-14)


def test_forward_without_grad_keeps_no_graph():
    scores, labels = random_problem((1000,), seed=3)
    with torch.no_grad():
        loss = aploss_cuda.ap_loss(scores.requires_grad_(True), labels)
    assert loss.grad_fn is None
    loss = aploss_cuda.ap_loss(scores.detach(), labels)
    assert loss.grad_fn is None and not loss.requires_grad


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


def test_double_backward_is_a_clear_error():
    scores, labels = random_problem((100,), seed=6, dtype=torch.float64)
    x = scores.requires_grad_(True)
    (grad,) = torch.autograd.grad(aploss_cuda.ap_loss(x, labels), x, create_graph=True)
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
