"""Fake (meta) and autograd implementations of the aploss operators (csrc/ops.cpp), the
pattern of PyTorch's custom C++/CUDA operator tutorial."""

import torch

from . import _C  # noqa: F401  (TORCH_LIBRARY registrations run on import)

STATE_ROWS = 6  # csrc/aploss/kernels.h, StateRow


def _positives_fakes(like, width):
    positives = like.new_empty((2, width), dtype=torch.float64)
    return positives, like.new_empty((width,), dtype=torch.int64)


@torch.library.register_fake("aploss::ap_loss_forward")
def _forward_fake(scores, labels, group_ids, delta, interpolate, method):
    torch._check(scores.shape == labels.shape, lambda: "labels.shape must equal scores.shape")
    ctx = torch.library.get_ctx()
    # P + 1 state columns and U + 1 offsets, data-dependent; each symbol must be a size.
    state = scores.new_empty((STATE_ROWS, ctx.new_dynamic_size(min=1)), dtype=torch.float64)
    offsets = scores.new_empty((ctx.new_dynamic_size(min=1),), dtype=torch.int64)
    if group_ids is None:
        codes = scores.new_empty((0,), dtype=torch.int32)
    else:
        codes = group_ids.new_empty(group_ids.shape, dtype=torch.int32)  # contiguous
    return scores.new_empty(()), state, offsets, codes


@torch.library.register_fake("aploss::ap_loss_backward")
def _backward_fake(grad_output, scores, labels, group_codes, state, offsets, delta, method):
    return torch.empty_like(scores)


@torch.library.register_fake("aploss::gather")
def _gather_fake(scores, labels, codes):
    width = torch.library.get_ctx().new_dynamic_size()
    return scores.new_empty((2, width), dtype=torch.float64)


@torch.library.register_fake("aploss::rank_positives")
def _rank_positives_fake(gathered, num_groups, delta):
    positives, positive_group = _positives_fakes(gathered, gathered.shape[1])
    return positives, gathered.new_empty((num_groups + 1,), dtype=torch.int64), positive_group


@torch.library.register_fake("aploss::pass1")
def _pass1_fake(scores, labels, codes, positives, offsets, positive_group, delta, method):
    return positives.new_empty((positives.shape[1],))


@torch.library.register_fake("aploss::positive_stage")
def _positive_stage_fake(positives, offsets, positive_group, false_positives, delta,
                         interpolate, loss_dtype, method):
    state = positives.new_empty((STATE_ROWS, positives.shape[1] + 1))
    return positives.new_empty((), dtype=loss_dtype), state


def _setup_context(ctx, inputs, output):
    scores, labels, group_ids, delta, interpolate, method = inputs
    _, state, offsets, codes = output
    ctx.mark_non_differentiable(state, offsets, codes)
    # O(P) state plus references to the inputs: nothing N-sized is allocated here.
    ctx.save_for_backward(scores, labels, codes, state, offsets)
    ctx.grouped = group_ids is not None
    ctx.delta = delta
    ctx.method = method


def _backward(ctx, grad_loss, *_):
    scores, labels, codes, state, offsets = ctx.saved_tensors
    grad_scores = torch.ops.aploss.ap_loss_backward(
        grad_loss, scores, labels, codes if ctx.grouped else None, state, offsets, ctx.delta,
        ctx.method,
    )
    return grad_scores, None, None, None, None, None


torch.library.register_autograd("aploss::ap_loss_forward", _backward, setup_context=_setup_context)


def _no_double_backward(ctx, grad):
    raise RuntimeError(
        "ap_loss does not support double backward: its gradient is the paper's "
        "error-driven update, not the derivative of a function, so it has no derivative"
    )


def _setup_backward_context(ctx, inputs, output):
    pass


torch.library.register_autograd(
    "aploss::ap_loss_backward", _no_double_backward, setup_context=_setup_backward_context
)


@torch.library.register_vmap("aploss::ap_loss_forward")
def _no_vmap(info, in_dims, *args):
    raise RuntimeError(
        "ap_loss does not support torch.vmap: it ranks every entry of its input as one "
        "ranking. For one ranking per example, pass group_ids (e.g. "
        "group_ids=torch.arange(B).view(B, *[1] * (scores.dim() - 1))): the loss is then the "
        "mean of the examples' AP-losses; for separate losses, call ap_loss per example"
    )
