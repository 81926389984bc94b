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


def ap_loss(scores, labels, *, delta=1.0, interpolate=True, method="auto"):
    """AP-loss over every entry of ``scores``: 1 - AP of one ranking of the whole batch.

    Args:
        scores: floating tensor of any shape (logits of every anchor x class).
        labels: same shape; 1 positive, 0 negative, -1 ignored (any of bool, int8,
            uint8, int32, int64, float32, float64; bool: True positive, False negative).
        delta: half-width of the piecewise-linear step H (> 0).
        interpolate: use interpolated precision (the paper's default).
        method: "sorted" (O(N log P), two streaming passes), "pairwise" (direct
            O(P * N) sums, for checking) or "auto" (the fastest: sorted).

    Returns:
        A 0-dim tensor in scores' dtype. Its backward is the paper's error-driven
        gradient (not the derivative of the loss), scaled by the incoming gradient.
    """
    _validate(scores, labels, delta, method)
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

    def forward(self, scores, labels):
        return ap_loss(
            scores, labels, delta=self.delta, interpolate=self.interpolate, method=self.method
        )

    def extra_repr(self):
        return f"delta={self.delta}, interpolate={self.interpolate}, method={self.method!r}"
