"""torch.compile(fullgraph=True) of a step that calls every loss: no graph break, and the
compiled loss and gradients equal eager's, ungrouped and grouped, with static and dynamic
shapes, on every backend registered."""

import pytest
import torch
from losses import problem

import aploss_cuda

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def step(scores, labels, targets, regression, group_ids):
    # delta=0.5 and the default delta: dynamic=True traces delta as a symbolic float
    ap = aploss_cuda.ap_loss(scores.sigmoid().logit(), labels, delta=0.5, group_ids=group_ids)
    ap = ap * 2.0 + aploss_cuda.ap_loss(scores, labels, group_ids=group_ids)
    rank_sort = aploss_cuda.rank_sort_loss(scores, targets, group_ids=group_ids)
    cls_loss, loc_loss = aploss_cuda.alrp_loss(scores, labels, regression, group_ids=group_ids)
    return ap + rank_sort + cls_loss + 0.5 * loc_loss


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grouped", [False, True], ids=["ungrouped", "per-image"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(device, grouped, dynamic):
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=dynamic)
    # a repeated shape, then a new one: a recompile (static) or the same graph (dynamic)
    for seed, shape in enumerate([(8, 30), (8, 30), (5, 44)]):
        scores, labels, _ = problem("ap", shape, seed=seed, p_pos=0.1, dtype=torch.float64)
        _, targets, _ = problem("rank_sort", shape, seed=seed, p_pos=0.1, dtype=torch.float64)
        _, _, extra = problem("alrp", shape, seed=seed, p_pos=0.1, dtype=torch.float64)
        ids = torch.arange(shape[0])[:, None] if grouped else None
        scores, labels, targets, regression, ids = (
            None if t is None else t.to(device)
            for t in (scores, labels, targets, extra["regression_losses"], ids))
        results = []
        for fn in (step, compiled):
            x = scores.clone().requires_grad_(True)
            l = regression.clone().requires_grad_(True)
            out = fn(x, labels, targets, l, ids)
            out.backward()
            results.append((out.detach(), x.grad, l.grad))
        (eager, eager_grad, eager_l_grad), (got, grad, l_grad) = results
        torch.testing.assert_close(got, eager, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, eager_grad, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(l_grad, eager_l_grad, rtol=1e-10, atol=1e-14)
