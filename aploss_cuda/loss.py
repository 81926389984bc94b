"""The public API: ap_loss, rank_sort_loss and alrp_loss, and their module forms."""

from typing import NamedTuple

import torch

from . import _contract, _pipeline, distributed

METHODS = _contract.METHODS


def ap_loss(
    scores,
    labels,
    *,
    delta=1.0,
    interpolate=True,
    method="auto",
    group_ids=None,
    process_group=None,
):
    """AP-loss over every entry of ``scores``: 1 - AP of one ranking of the whole batch.

    Args:
        scores: floating tensor of any shape (logits of every anchor x class).
        labels: same shape; 1 positive, 0 negative, -1 ignored (any of bool, int8,
            uint8, int32, int64, float32, float64; bool: True positive, False negative).
        delta: half-width of the piecewise-linear step H (> 0).
        interpolate: use interpolated precision (the paper's default).
        method: "sorted" (O(N log P), two streaming passes), "pairwise" (direct
            O(P * N) sums, for checking) or "auto" (the fastest: sorted).
        group_ids: optional integer tensor broadcastable to scores' shape (e.g.
            ``torch.arange(B)[:, None, None]`` for one ranking per image). Entries with the
            same id form one ranking; the loss is the mean of the AP-losses of the groups
            that have a positive, and each group's gradient is its single-ranking gradient
            divided by the number of such groups. Ids must be >= 0; they need not be
            contiguous or sorted.
        process_group: optional ``torch.distributed`` process group (or
            ``torch.distributed.group.WORLD``): the ranking spans the entries of every rank;
            the loss is the same on every rank and each rank gets its slice of the gradient
            of the single-process loss over all ranks' entries. See ``aploss_cuda.distributed``.

    Returns:
        A 0-dim tensor in scores' dtype. Its backward is the paper's error-driven
        gradient (not the derivative of the loss), scaled by the incoming gradient.
    """
    def inputs():
        _contract.validate_ap_loss(scores, labels, delta, method, group_ids)
        return scores, labels, None

    loss, _ = _pipeline.forward(
        "ap_loss", scores, inputs, group_ids=group_ids, delta=delta, interpolate=interpolate,
        method=method, process_group=process_group,
    )
    return loss


class APLoss(torch.nn.Module):
    """Module form of :func:`ap_loss`."""

    def __init__(self, *, delta=1.0, interpolate=True, method="auto"):
        super().__init__()
        _contract.validate_options(delta, method, "APLoss")
        self.delta = float(delta)
        self.interpolate = bool(interpolate)
        self.method = method

    def forward(self, scores, labels, *, group_ids=None, process_group=None):
        return ap_loss(
            scores,
            labels,
            delta=self.delta,
            interpolate=self.interpolate,
            method=self.method,
            group_ids=group_ids,
            process_group=process_group,
        )

    def extra_repr(self):
        return f"delta={self.delta}, interpolate={self.interpolate}, method={self.method!r}"


class RankSortParts(NamedTuple):
    """rank_sort_loss(..., return_parts=True): the loss and its two parts (detached)."""

    loss: torch.Tensor
    ranking: torch.Tensor
    sorting: torch.Tensor


def rank_sort_loss(
    scores, targets, *, delta=0.5, group_ids=None, return_parts=False, process_group=None
):
    """Rank & Sort loss (Oksuz et al., ICCV 2021) over every entry of ``scores``: one
    ranking of the whole batch, as the authors' released code computes it
    (docs/ranking_family.md).

    Args:
        scores: floating tensor of any shape (logits of every anchor x class).
        targets: floating tensor shaped like scores: > 0 a positive with its target in
            (0, 1] (the IoU of the prediction with its ground-truth box, detached), 0 a
            negative, < 0 (use -1) ignored.
        delta: half-width of the piecewise-linear step H (> 0).
        group_ids: optional integer tensor broadcastable to scores' shape: entries with
            equal id form separate rankings and the loss is the mean of the groups' losses
            (as in ``ap_loss``).
        return_parts: also return the ranking and sorting losses (detached).
        process_group: optional ``torch.distributed`` process group: one ranking of the
            entries of every rank, as ``ap_loss``'s (``aploss_cuda.distributed``). The loss
            and its parts are the same on every rank, those of the single-process call on
            the concatenation of every rank's flattened inputs; each rank's gradient is its
            slice of that call's gradient.

    Returns:
        The 0-dim loss ranking + sorting in scores' dtype, carrying the whole error-driven
        gradient (the released code's, times the incoming gradient); with
        ``return_parts=True`` a ``RankSortParts(loss, ranking, sorting)``.
    """
    def inputs():
        _contract.validate_rank_sort(scores, targets, delta, group_ids)
        # Row-major: the positives' memory order is the order the user indexes with.
        return scores.contiguous(), targets.detach().contiguous(), None

    loss, parts = _pipeline.forward(
        "rank_sort_loss", scores, inputs, group_ids=group_ids, delta=delta,
        process_group=process_group,
    )
    if return_parts:
        parts = parts.to(loss.dtype)
        return RankSortParts(loss, parts[0], parts[1])
    return loss


def alrp_loss(
    scores, labels, regression_losses, *, delta=1.0, group_ids=None, process_group=None
):
    """aLRP loss (Oksuz et al., NeurIPS 2020) over every entry of ``scores``, as the
    authors' released code computes it (docs/ranking_family.md).

    Args:
        scores: floating tensor of any shape (logits of every anchor x class).
        labels: same shape; 1 positive, 0 negative, -1 ignored (dtypes as ``ap_loss``).
        regression_losses: 1-D floating tensor, one value >= 0 per positive, in the
            row-major order of the positive entries of labels (``labels[labels == 1]``):
            the localisation loss of the box predicted there (e.g. GIoU loss / 2).
        delta: half-width of the piecewise-linear step H (> 0).
        group_ids: optional, as in ``ap_loss``: both components are then means over the
            groups that have a positive.
        process_group: optional ``torch.distributed`` process group: one ranking of the
            entries of every rank, as ``ap_loss``'s (``aploss_cuda.distributed``); each
            rank passes the regression losses of its own positives. cls_loss and loc_loss
            are the same on every rank, those of the single-process call on the
            concatenation of every rank's flattened inputs and regression losses; each
            rank's gradients (to its scores, to its regression losses) are its slices of
            that call's gradients.

    Returns:
        ``(cls_loss, loc_loss)``, 0-dim tensors in the dtypes of scores and of
        regression_losses. cls_loss carries the error-driven gradient to scores (none to
        regression_losses); loc_loss, the mean over the positives (by descending score,
        ties by descending position) of the running sum of their regression losses over
        their rank, is differentiable with respect to regression_losses by ordinary
        autograd (ranks detached). The released heads train on
        ``cls_loss + SB * loc_loss`` with a self-balancing weight SB they keep themselves.
    """
    def inputs():
        _contract.validate_alrp(scores, labels, regression_losses, delta, group_ids)
        return scores.contiguous(), labels.contiguous(), regression_losses.detach()

    cls_loss, loc_weights = _pipeline.forward(
        "alrp_loss", scores, inputs, group_ids=group_ids, delta=delta,
        process_group=process_group, per_positive_extra=True,
    )
    # d loc_loss / d regression_losses = loc_weights (ranks detached).
    loc_loss = torch.dot(regression_losses.to(torch.float64), loc_weights)
    if process_group is not None:
        loc_loss = distributed.sum_across_ranks(loc_loss, process_group)
    return cls_loss, loc_loss.to(regression_losses.dtype)


class RankSortLoss(torch.nn.Module):
    """Module form of :func:`rank_sort_loss`."""

    def __init__(self, *, delta=0.5):
        super().__init__()
        _contract.validate_delta(delta, "RankSortLoss")
        self.delta = float(delta)

    def forward(self, scores, targets, *, group_ids=None, return_parts=False, process_group=None):
        return rank_sort_loss(
            scores, targets, delta=self.delta, group_ids=group_ids, return_parts=return_parts,
            process_group=process_group,
        )

    def extra_repr(self):
        return f"delta={self.delta}"


class ALRPLoss(torch.nn.Module):
    """Module form of :func:`alrp_loss`."""

    def __init__(self, *, delta=1.0):
        super().__init__()
        _contract.validate_delta(delta, "ALRPLoss")
        self.delta = float(delta)

    def forward(self, scores, labels, regression_losses, *, group_ids=None, process_group=None):
        return alrp_loss(
            scores, labels, regression_losses, delta=self.delta, group_ids=group_ids,
            process_group=process_group,
        )

    def extra_repr(self):
        return f"delta={self.delta}"
