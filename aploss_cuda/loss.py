"""The public API: ap_loss and APLoss."""

import torch

from . import _contract, distributed

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
    if process_group is not None:
        # Validates on every rank and tells the others when one rank's input is invalid,
        # so an error cannot leave the other ranks waiting in a collective.
        return distributed.ap_loss_across_ranks(
            scores, labels, group_ids, process_group, delta, bool(interpolate), method
        )
    _contract.validate(scores, labels, delta, method)
    _contract.validate_group_ids(group_ids, scores, method)
    loss, *_ = torch.ops.aploss.ap_loss_forward(
        scores, labels, group_ids, float(delta), bool(interpolate), method
    )
    return loss


class APLoss(torch.nn.Module):
    """Module form of :func:`ap_loss`."""

    def __init__(self, *, delta=1.0, interpolate=True, method="auto"):
        super().__init__()
        _contract.validate_options(delta, method)
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
