"""Registers the fake (meta) and autograd implementations of the aploss operators,
the pattern of PyTorch's custom C++/CUDA operator tutorial."""

import torch

from . import _C  # noqa: F401  (TORCH_LIBRARY registrations run on import)

STATE_ROWS = 6  # csrc/aploss/kernels.h, StateRow


@torch.library.register_fake("aploss::ap_loss_forward")
def _ap_loss_forward_fake(scores, labels, delta, interpolate, method):
    torch._check(scores.shape == labels.shape, lambda: "labels.shape must equal scores.shape")
    # The state has P + 1 columns, P data-dependent; the symbol must be a size itself.
    width = torch.library.get_ctx().new_dynamic_size(min=1)
    state = scores.new_empty((STATE_ROWS, width), dtype=torch.float64)
    return scores.new_empty(()), state


@torch.library.register_fake("aploss::ap_loss_backward")
def _ap_loss_backward_fake(grad_output, scores, labels, state, delta, method):
    return torch.empty_like(scores)


def _setup_context(ctx, inputs, output):
    scores, labels, delta, interpolate, method = inputs
    _, state = output
    ctx.mark_non_differentiable(state)
    # O(P) state plus references to the inputs: nothing N-sized is allocated here.
    ctx.save_for_backward(scores, labels, state)
    ctx.delta = delta
    ctx.method = method


def _backward(ctx, grad_loss, grad_state):
    scores, labels, state = ctx.saved_tensors
    grad_scores = torch.ops.aploss.ap_loss_backward(
        grad_loss, scores, labels, state, ctx.delta, ctx.method
    )
    return grad_scores, None, None, None, None


torch.library.register_autograd(
    "aploss::ap_loss_forward", _backward, setup_context=_setup_context
)


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


# ---- grouped rankings (group_ids) -------------------------------------------------------


@torch.library.register_fake("aploss::ap_loss_grouped_forward")
def _ap_loss_grouped_forward_fake(scores, labels, group_ids, delta, interpolate, method):
    torch._check(scores.shape == labels.shape, lambda: "labels.shape must equal scores.shape")
    ctx = torch.library.get_ctx()
    width = ctx.new_dynamic_size(min=1)  # P + 1
    num_offsets = ctx.new_dynamic_size(min=1)  # number of dense group codes + 1
    state = scores.new_empty((STATE_ROWS, width), dtype=torch.float64)
    offsets = scores.new_empty((num_offsets,), dtype=torch.int64)
    codes = group_ids.new_empty(group_ids.shape, dtype=torch.int32)  # contiguous
    return scores.new_empty(()), state, offsets, codes


@torch.library.register_fake("aploss::ap_loss_grouped_backward")
def _ap_loss_grouped_backward_fake(grad_output, scores, labels, group_codes, state, offsets,
                                   delta, method):
    return torch.empty_like(scores)


def _setup_grouped_context(ctx, inputs, output):
    scores, labels, group_ids, delta, interpolate, method = inputs
    _, state, offsets, codes = output
    ctx.mark_non_differentiable(state, offsets, codes)
    ctx.save_for_backward(scores, labels, codes, state, offsets)
    ctx.delta = delta
    ctx.method = method


def _grouped_backward(ctx, grad_loss, grad_state, grad_offsets, grad_codes):
    scores, labels, codes, state, offsets = ctx.saved_tensors
    grad_scores = torch.ops.aploss.ap_loss_grouped_backward(
        grad_loss, scores, labels, codes, state, offsets, ctx.delta, ctx.method
    )
    return grad_scores, None, None, None, None, None


torch.library.register_autograd(
    "aploss::ap_loss_grouped_forward", _grouped_backward, setup_context=_setup_grouped_context
)
torch.library.register_autograd(
    "aploss::ap_loss_grouped_backward", _no_double_backward, setup_context=_setup_backward_context
)
