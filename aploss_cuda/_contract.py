"""The input contract of ap_loss, rank_sort_loss and alrp_loss, checked before any kernel runs: the dtypes, methods and
shapes it accepts, each defined here once (docs/input_contract.md). The C++ operators
check the same rules for callers that reach them directly."""

import sys

import torch

METHODS = ("auto", "sorted", "pairwise")
# delta: the smallest normal float64 (1 / (2 delta) must be finite) up to the largest.
MIN_DELTA = sys.float_info.min
MAX_DELTA = sys.float_info.max
SCORE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Read in their own dtype by every kernel (csrc/aploss/dispatch.h, APLOSS_DISPATCH_LABELS).
LABEL_DTYPES = (
    torch.bool,
    torch.int8,
    torch.uint8,
    torch.int32,
    torch.int64,
    torch.float32,
    torch.float64,
)


def _names(dtypes):
    return ", ".join(map(str, dtypes))


def _check_layout(tensor, name, loss):
    """Dense (strided) tensors only: sparse and nested tensors name their layout."""
    if tensor.is_nested:
        raise TypeError(f"{loss}: {name} must be a dense (strided) tensor, got a nested tensor")
    if tensor.layout != torch.strided:
        raise TypeError(
            f"{loss}: {name} must be a dense (strided) tensor, got layout {tensor.layout}"
        )


def validate_ap_loss(scores, labels, delta, method, group_ids):
    _check_pair(scores, labels, "labels", "ap_loss")
    _check_label_dtype(labels, "ap_loss")
    validate_options(delta, method)
    validate_group_ids(group_ids, scores, method, "ap_loss")


def validate_options(delta, method, loss="ap_loss"):
    validate_delta(delta, loss)
    if method not in METHODS:
        raise ValueError(f"{loss}: method must be one of {METHODS}, got {method!r}")


def validate_delta(delta, loss):
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise TypeError(f"{loss}: delta must be a number, got {type(delta).__name__}")
    # Comparisons, not math.isfinite or float(): torch.compile traces a default delta as a
    # symbolic float, and an int beyond float64's range compares exactly.
    if not (MIN_DELTA <= delta <= MAX_DELTA):
        raise ValueError(
            f"{loss}: delta must be finite and >= {MIN_DELTA!r} (the smallest normal "
            f"float64), got {delta!r}"
        )


def validate_rank_sort(scores, targets, delta, group_ids):
    """rank_sort_loss: targets are floats like scores (their values are checked by the
    operator: NaN or a target above 1 is a ValueError)."""
    _check_pair(scores, targets, "targets", "rank_sort_loss")
    if targets.dtype not in SCORE_DTYPES:
        raise TypeError(
            f"rank_sort_loss: targets must have a floating dtype ({_names(SCORE_DTYPES)}), "
            f"got {targets.dtype}"
        )
    validate_delta(delta, "rank_sort_loss")
    validate_group_ids(group_ids, scores, "sorted", "rank_sort_loss")


def validate_alrp(scores, labels, regression_losses, delta, group_ids):
    """alrp_loss: labels as ap_loss's; regression_losses 1-D floats on scores' device (their
    length and values are checked by the operator, which knows the positives)."""
    _check_pair(scores, labels, "labels", "alrp_loss")
    _check_label_dtype(labels, "alrp_loss")
    if not isinstance(regression_losses, torch.Tensor):
        raise TypeError(
            f"alrp_loss: regression_losses must be a tensor, got {type(regression_losses).__name__}"
        )
    _check_layout(regression_losses, "regression_losses", "alrp_loss")
    if regression_losses.dtype not in SCORE_DTYPES:
        raise TypeError(
            f"alrp_loss: regression_losses must have a floating dtype, got {regression_losses.dtype}"
        )
    if regression_losses.dim() != 1:
        raise ValueError(
            "alrp_loss: regression_losses must be 1-D (one value per positive), got shape "
            f"{tuple(regression_losses.shape)}"
        )
    if regression_losses.device != scores.device:
        raise ValueError(
            f"alrp_loss: scores are on {scores.device} but regression_losses are on "
            f"{regression_losses.device}"
        )
    validate_delta(delta, "alrp_loss")
    validate_group_ids(group_ids, scores, "sorted", "alrp_loss")


def _check_label_dtype(labels, loss):
    if labels.dtype not in LABEL_DTYPES:
        raise TypeError(
            f"{loss}: labels dtype {labels.dtype} is not supported; use one of "
            f"{_names(LABEL_DTYPES)}"
        )


def _check_pair(scores, other, name, loss):
    if not isinstance(scores, torch.Tensor) or not isinstance(other, torch.Tensor):
        raise TypeError(
            f"{loss}: scores and {name} must be tensors, got {type(scores).__name__} "
            f"and {type(other).__name__}"
        )
    _check_layout(scores, "scores", loss)
    _check_layout(other, name, loss)
    if scores.dtype not in SCORE_DTYPES:
        raise TypeError(
            f"{loss}: scores must have a floating dtype ({_names(SCORE_DTYPES)}), "
            f"got {scores.dtype}"
        )
    if scores.shape != other.shape:
        raise ValueError(
            f"{loss}: {name}.shape {tuple(other.shape)} must equal scores.shape "
            f"{tuple(scores.shape)} (no broadcasting)"
        )
    if scores.device != other.device:
        raise ValueError(f"{loss}: scores are on {scores.device} but {name} are on {other.device}")


def validate_group_ids(group_ids, scores, method, loss="ap_loss"):
    if group_ids is None:
        return
    if not isinstance(group_ids, torch.Tensor):
        raise TypeError(f"{loss}: group_ids must be a tensor, got {type(group_ids).__name__}")
    _check_layout(group_ids, "group_ids", loss)
    if group_ids.dtype == torch.bool or group_ids.is_floating_point() or group_ids.is_complex():
        raise TypeError(f"{loss}: group_ids must be an integer tensor, got {group_ids.dtype}")
    if group_ids.device != scores.device:
        raise ValueError(
            f"{loss}: scores are on {scores.device} but group_ids are on {group_ids.device}"
        )
    broadcastable = group_ids.dim() <= scores.dim() and all(
        g in (1, s) for g, s in zip(reversed(group_ids.shape), reversed(scores.shape))
    )
    if not broadcastable:
        raise ValueError(
            f"{loss}: group_ids.shape {tuple(group_ids.shape)} is not broadcastable to "
            f"scores.shape {tuple(scores.shape)}"
        )
    if method == "pairwise":
        raise ValueError(f"{loss}: group_ids work with method 'sorted' or 'auto', not 'pairwise'")
