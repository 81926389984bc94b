"""The public API: ap_loss and APLoss."""

import math

import torch

METHODS = ("auto", "sorted", "pairwise")

# Label dtypes the kernels read directly (csrc/aploss/dispatch.h).
LABEL_DTYPES = (
    torch.bool,
    torch.int8,
    torch.uint8,
    torch.int32,
    torch.int64,
    torch.float32,
    torch.float64,
)
SCORE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _validate(scores, labels, delta, method):
    if not isinstance(scores, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"ap_loss: scores and labels must be tensors, got {type(scores).__name__} "
            f"and {type(labels).__name__}"
        )
    if scores.dtype not in SCORE_DTYPES:
        raise TypeError(
            f"ap_loss: scores must have a floating dtype ({', '.join(map(str, SCORE_DTYPES))}), "
            f"got {scores.dtype}"
        )
    if labels.dtype not in LABEL_DTYPES:
        raise TypeError(
            f"ap_loss: labels dtype {labels.dtype} is not supported; use one of "
            f"{', '.join(map(str, LABEL_DTYPES))}"
        )
    if scores.shape != labels.shape:
        raise ValueError(
            f"ap_loss: labels.shape {tuple(labels.shape)} must equal scores.shape "
            f"{tuple(scores.shape)} (no broadcasting)"
        )
    if scores.device != labels.device:
        raise ValueError(
            f"ap_loss: scores are on {scores.device} but labels are on {labels.device}"
        )
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise TypeError(f"ap_loss: delta must be a number, got {type(delta).__name__}")
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"ap_loss: delta must be finite and > 0, got {delta}")
    if method not in METHODS:
        raise ValueError(f"ap_loss: method must be one of {METHODS}, got {method!r}")


def _validate_group_ids(group_ids, scores, method):
    if group_ids is None:
        return
    if not isinstance(group_ids, torch.Tensor):
        raise TypeError(f"ap_loss: group_ids must be a tensor, got {type(group_ids).__name__}")
    if group_ids.dtype == torch.bool or group_ids.is_floating_point() or group_ids.is_complex():
        raise TypeError(f"ap_loss: group_ids must be an integer tensor, got {group_ids.dtype}")
    if group_ids.device != scores.device:
        raise ValueError(
            f"ap_loss: scores are on {scores.device} but group_ids are on {group_ids.device}"
        )
    try:
        torch.broadcast_shapes(group_ids.shape, scores.shape)
        broadcastable = group_ids.dim() <= scores.dim() and all(
            g in (1, s) for g, s in zip(reversed(group_ids.shape), reversed(scores.shape))
        )
    except RuntimeError:
        broadcastable = False
    if not broadcastable:
        raise ValueError(
            f"ap_loss: group_ids.shape {tuple(group_ids.shape)} is not broadcastable to "
            f"scores.shape {tuple(scores.shape)}"
        )
    if method == "pairwise":
        raise ValueError("ap_loss: group_ids work with method 'sorted' or 'auto', not 'pairwise'")


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
        from .distributed import distributed_ap_loss  # (imports this module: not at the top)

        return distributed_ap_loss(
            scores, labels, group_ids, process_group, delta, bool(interpolate), method
        )
    _validate(scores, labels, delta, method)
    _validate_group_ids(group_ids, scores, method)
    if group_ids is not None:
        loss, *_ = torch.ops.aploss.ap_loss_grouped_forward(
            scores, labels, group_ids, float(delta), bool(interpolate), method
        )
        return loss
    loss, _state = torch.ops.aploss.ap_loss_forward(
        scores, labels, float(delta), bool(interpolate), method
    )
    return loss


class APLoss(torch.nn.Module):
    """Module form of :func:`ap_loss`."""

    def __init__(self, *, delta=1.0, interpolate=True, method="auto"):
        super().__init__()
        _validate(torch.empty(0), torch.empty(0), delta, method)
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
