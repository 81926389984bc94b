"""Rank & Sort and aLRP on a target against their float64 references in full: the loss,
its parts (ranking and sorting; the localisation loss), the gradient of the scores and of
the regression losses."""

import torch
from helpers import TOLERANCE

import aploss_cuda
from aploss_cuda.reference import alrp_loss_reference, rank_sort_loss_reference


def family_problem(n, *, seed=0, dtype=torch.float64, p_pos=0.15, p_ignore=0.1, ties=False,
                   loc=0.0, scale=1.5):
    """Scores, Rank & Sort targets (IoU-like in [0.05, 1], some exactly 1), 1/0/-1 labels
    and one regression loss per positive."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=torch.float64) * scale + loc
    if ties:
        scores = (scores * 2).round() / 2 + loc - loc  # coarse grid: many tied scores
    u = torch.rand(n, generator=g)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[u < p_pos] = 1
    labels[(u >= p_pos) & (u < p_pos + p_ignore)] = -1
    iou = torch.rand(n, generator=g, dtype=torch.float64) * 0.95 + 0.05
    if ties:
        iou = (iou * 4).ceil() / 4  # tied targets, and targets equal to 1
    iou[torch.rand(n, generator=g) < 0.1] = 1.0
    targets = torch.where(labels == 1, iou, labels.to(torch.float64))
    num_pos = int((labels == 1).sum())
    regression = torch.rand(num_pos, generator=g, dtype=torch.float64)
    return scores.to(dtype), targets.to(dtype), labels, regression.to(dtype)


def assert_close(got, expected, dtype, *, scale=None):
    tol = TOLERANCE[dtype]
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    scale = expected.abs().max().item() if scale is None and expected.numel() else (scale or 0.0)
    torch.testing.assert_close(got, expected, rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * scale)


def rank_sort_on(target, scores, targets_, **kwargs):
    x = target.put(scores).detach().clone().requires_grad_(True)
    with target.running():
        parts = aploss_cuda.rank_sort_loss(x, target.put(targets_), return_parts=True, **kwargs)
        parts.loss.backward()
    assert parts.loss.dtype == scores.dtype and parts.loss.dim() == 0
    assert not parts.ranking.requires_grad and not parts.sorting.requires_grad
    return [t.detach().cpu() for t in (parts.loss, parts.ranking, parts.sorting, x.grad)]


def check_rank_sort(target, scores, targets_, group_ids=None, delta=0.5):
    kwargs = dict(delta=delta)
    if group_ids is not None:
        kwargs["group_ids"] = target.put(group_ids)
    loss, ranking, sorting, grad = rank_sort_on(target, scores, targets_, **kwargs)
    ref = rank_sort_loss_reference(scores, targets_, delta=delta, group_ids=group_ids)
    for got, expected in zip((loss, ranking, sorting), ref[:3]):
        assert_close(got, expected, scores.dtype, scale=1.0)
    assert_close(grad, ref[3], scores.dtype)
    return loss, grad


def alrp_on(target, scores, labels, regression, **kwargs):
    x = target.put(scores).detach().clone().requires_grad_(True)
    l = target.put(regression).detach().clone().requires_grad_(True)
    with target.running():
        cls_loss, loc_loss = aploss_cuda.alrp_loss(x, target.put(labels), l, **kwargs)
        (cls_loss + loc_loss).backward()
    assert cls_loss.dtype == scores.dtype and loc_loss.dtype == regression.dtype
    return [t.detach().cpu() for t in (cls_loss, loc_loss, x.grad, l.grad)]


def check_alrp(target, scores, labels, regression, group_ids=None, delta=1.0):
    kwargs = dict(delta=delta)
    if group_ids is not None:
        kwargs["group_ids"] = target.put(group_ids)
    cls_loss, loc_loss, grad, regression_grad = alrp_on(target, scores, labels, regression, **kwargs)
    l = regression.detach().double().clone().requires_grad_(True)
    ref_cls, ref_loc, ref_grad = alrp_loss_reference(scores, labels, l, delta=delta, group_ids=group_ids)
    ref_loc.backward()
    assert_close(cls_loss, ref_cls, scores.dtype, scale=1.0)
    assert_close(loc_loss, ref_loc, regression.dtype, scale=1.0)
    assert_close(grad, ref_grad, scores.dtype)
    assert_close(regression_grad, l.grad, regression.dtype)
    return cls_loss, grad
