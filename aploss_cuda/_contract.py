"""The input contract of ap_loss, checked before any kernel runs: the dtypes, methods and
shapes it accepts, each defined here once (docs/input_contract.md). The C++ operators
check the same rules for callers that reach them directly."""

import math

import torch

METHODS = ("auto", "sorted", "pairwise")
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


def validate(scores, labels, delta, method):
    if not isinstance(scores, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"ap_loss: scores and labels must be tensors, got {type(scores).__name__} "
            f"and {type(labels).__name__}"
        )
    if scores.dtype not in SCORE_DTYPES:
        raise TypeError(
            f"ap_loss: scores must have a floating dtype ({_names(SCORE_DTYPES)}), "
            f"got {scores.dtype}"
        )
    if labels.dtype not in LABEL_DTYPES:
        raise TypeError(
            f"ap_loss: labels dtype {labels.dtype} is not supported; use one of "
            f"{_names(LABEL_DTYPES)}"
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
    validate_options(delta, method)


def validate_options(delta, method):
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise TypeError(f"ap_loss: delta must be a number, got {type(delta).__name__}")
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"ap_loss: delta must be finite and > 0, got {delta}")
    if method not in METHODS:
        raise ValueError(f"ap_loss: method must be one of {METHODS}, got {method!r}")


def validate_group_ids(group_ids, scores, method):
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
    broadcastable = group_ids.dim() <= scores.dim() and all(
        g in (1, s) for g, s in zip(reversed(group_ids.shape), reversed(scores.shape))
    )
    if not broadcastable:
        raise ValueError(
            f"ap_loss: group_ids.shape {tuple(group_ids.shape)} is not broadcastable to "
            f"scores.shape {tuple(scores.shape)}"
        )
    if method == "pairwise":
        raise ValueError("ap_loss: group_ids work with method 'sorted' or 'auto', not 'pairwise'")
