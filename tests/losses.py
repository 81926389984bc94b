"""The three losses in one form for table-driven tests: a random problem in each loss's
own input form, one call through the public API, and the float64 reference of the same
call (the `expected_fn`). `second` is the labels (AP-loss, aLRP) or the targets
(Rank & Sort); aLRP's regression losses travel in `extra`. A loss's result here is
(loss, gradient of the scores); aLRP's loss is its classification loss, whose gradient
the scores get."""

import math

import torch
from helpers import random_problem

import aploss_cuda
from aploss_cuda.reference import alrp_loss_reference, ap_loss_reference, rank_sort_loss_reference

LOSSES = ("ap", "rank_sort", "alrp")


def problem(loss, shape, seed, p_pos=0.02, dtype=torch.float32, **kwargs):
    """(scores, second, extra) for `loss` (kwargs: helpers.random_problem's)."""
    scores, labels = random_problem(shape, seed=seed, p_pos=p_pos, dtype=dtype, **kwargs)
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


def positives(loss, second):
    return second > 0 if loss == "rank_sort" else second == 1


def value(loss, scores, second, group_ids=None, **kwargs):
    """The loss of one call through the public API; kwargs: extra and the loss's own
    options (delta, interpolate, method)."""
    if loss == "ap":
        return aploss_cuda.ap_loss(scores, second, group_ids=group_ids, **kwargs)
    if loss == "rank_sort":
        return aploss_cuda.rank_sort_loss(scores, second, group_ids=group_ids, **kwargs)
    kwargs = dict(kwargs)
    regression = kwargs.pop("regression_losses")
    return aploss_cuda.alrp_loss(scores, second, regression, group_ids=group_ids, **kwargs)[0]


def run(loss, scores, second, group_ids=None, **kwargs):
    """(loss, gradient) of one call through the public API (value's arguments)."""
    x = scores.detach().clone().requires_grad_(True)
    result = value(loss, x, second, group_ids=group_ids, **kwargs)
    result.backward()
    return result.detach(), x.grad


def reference(loss, scores, second, group_ids=None, **kwargs):
    """The float64 reference's (loss, gradient) of the same call. ap_loss_reference has no
    groups: grouped, it is called once per group with a positive (the mean of their losses,
    each gradient divided by their number)."""
    kwargs = dict(kwargs)
    kwargs.pop("method", None)
    if loss == "rank_sort":
        value, _, _, grad = rank_sort_loss_reference(scores, second, group_ids=group_ids, **kwargs)
        return value, grad
    if loss == "alrp":
        regression = kwargs.pop("regression_losses")
        value, _, grad = alrp_loss_reference(scores, second, regression, group_ids=group_ids,
                                             **kwargs)
        return value, grad
    if group_ids is None:
        return ap_loss_reference(scores, second, **kwargs)
    value, grad, _ = ap_grouped_reference(scores, second, group_ids, **kwargs)
    return value, grad


def ap_grouped_reference(scores, labels, group_ids, delta=1.0, interpolate=True):
    """(loss, grad, per_group) in float64 from one ap_loss_reference call per group with a
    positive; per_group maps id -> (flat indices, that group's single-ranking loss)."""
    shape = scores.shape
    s = scores.detach().cpu().reshape(-1)
    y = labels.detach().cpu().reshape(-1)
    g = group_ids.detach().cpu().to(torch.int64).expand(shape).reshape(-1)
    grad = torch.zeros(s.numel(), dtype=torch.float64)
    if s.numel() == 0:
        return torch.zeros((), dtype=torch.float64), grad.reshape(shape), {}
    order = torch.argsort(g, stable=True)
    ids, counts = torch.unique_consecutive(g[order], return_counts=True)
    per_group = {}
    for gid, idx in zip(ids.tolist(), torch.split(order, counts.tolist())):
        if (y[idx] == 1).any():
            loss_g, grad_g = ap_loss_reference(s[idx], y[idx], delta, interpolate)
            per_group[gid] = (idx, loss_g.item(), grad_g)
    num = len(per_group)
    for idx, _, grad_g in per_group.values():
        grad[idx] = grad_g / num
    losses = [v[1] for v in per_group.values()]
    loss = torch.tensor(math.fsum(losses) / num if num else 0.0, dtype=torch.float64)
    return loss, grad.reshape(shape), {k: (v[0], v[1]) for k, v in per_group.items()}


def loop_of_single_rankings(loss, scores, second, group_ids, **extra):
    """The grouped result as a user computes it without group_ids: one ungrouped call per
    group with a positive, the mean of their losses, each gradient divided by their number."""
    flat_ids = group_ids.expand(scores.shape).reshape(-1)
    flat_scores, flat_second = scores.reshape(-1), second.reshape(-1)
    positive = positives(loss, flat_second)
    positive_order = torch.cumsum(positive.long(), 0) - 1  # aLRP: each positive's regression loss
    members = [torch.nonzero(flat_ids == u).reshape(-1) for u in torch.unique(flat_ids.cpu()).tolist()]
    members = [m for m in members if positive[m].any()]
    total = torch.zeros((), dtype=torch.float64)
    grad = torch.zeros_like(flat_scores)
    for m in members:
        kwargs = {}
        if loss == "alrp":
            kwargs["regression_losses"] = extra["regression_losses"][positive_order[m[positive[m]]]]
        value, g = run(loss, flat_scores[m], flat_second[m], **kwargs)
        total += value.double().cpu()
        grad[m] = g
    count = max(len(members), 1)
    return (total / count).to(scores.dtype), (grad / count).reshape(scores.shape)
