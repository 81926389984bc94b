"""Fake (meta) and autograd implementations of the aploss operators (csrc/ops.cpp), the
pattern of PyTorch's custom C++/CUDA operator tutorial."""

import torch

from . import _C  # noqa: F401  (TORCH_LIBRARY registrations run on import)

STATE_ROWS = 5  # csrc/aploss/kernels.h, StateRow


def _positives_fakes(like, width):
    positives = like.new_empty((2, width), dtype=torch.float64)
    return positives, like.new_empty((width,), dtype=torch.int64)


@torch.library.register_fake("aploss::ap_loss_forward")
def _forward_fake(scores, labels, group_ids, delta, interpolate, method):
    torch._check(scores.shape == labels.shape, lambda: "labels.shape must equal scores.shape")
    state, offsets = _state_and_offsets_fakes(scores)
    width = torch.library.get_ctx().new_dynamic_size()
    return (scores.new_empty(()), state, offsets, _codes_fake(scores, group_ids),
            scores.new_empty((2, width), dtype=torch.float64))


def _state_and_offsets_fakes(scores):
    """P + 1 state columns and U + 1 offsets, data-dependent; each symbol must be a size."""
    ctx = torch.library.get_ctx()
    state = scores.new_empty((STATE_ROWS, ctx.new_dynamic_size(min=1)), dtype=torch.float64)
    return state, scores.new_empty((ctx.new_dynamic_size(min=1),), dtype=torch.int64)


def _codes_fake(scores, group_ids):
    if group_ids is None:
        return scores.new_empty((0,), dtype=torch.int32)
    return group_ids.new_empty(group_ids.shape, dtype=torch.int32)  # contiguous


@torch.library.register_fake("aploss::rank_sort_forward")
def _rank_sort_forward_fake(scores, targets, group_ids, delta):
    torch._check(scores.shape == targets.shape, lambda: "targets.shape must equal scores.shape")
    state, offsets = _state_and_offsets_fakes(scores)
    width = torch.library.get_ctx().new_dynamic_size()
    return (
        scores.new_empty(()),
        scores.new_empty((2,)),
        state,
        offsets,
        _codes_fake(scores, group_ids),
        torch.empty_like(targets, dtype=torch.int8),
        scores.new_empty((2, width), dtype=torch.float64),
    )


@torch.library.register_fake("aploss::alrp_forward")
def _alrp_forward_fake(scores, labels, regression_losses, group_ids, delta):
    torch._check(scores.shape == labels.shape, lambda: "labels.shape must equal scores.shape")
    state, offsets = _state_and_offsets_fakes(scores)
    num_pos = regression_losses.shape[0]
    return (
        scores.new_empty(()),
        scores.new_empty((num_pos,), dtype=torch.float64),
        state,
        offsets,
        _codes_fake(scores, group_ids),
        scores.new_empty((2, num_pos), dtype=torch.float64),
    )


@torch.library.register_fake("aploss::pass2")
def _pass2_fake(grad_output, scores, labels, group_codes, state, offsets, positive_grads, delta,
                method):
    return torch.empty_like(scores)


@torch.library.register_fake("aploss::gather")
def _gather_fake(scores, labels, codes):
    width = torch.library.get_ctx().new_dynamic_size()
    return scores.new_empty((3, width), dtype=torch.float64)


@torch.library.register_fake("aploss::rank_positives")
def _rank_positives_fake(gathered, num_groups, delta):
    positives, positive_group = _positives_fakes(gathered, gathered.shape[1])
    offsets = gathered.new_empty((num_groups + 1,), dtype=torch.int64)
    return positives, offsets, positive_group, torch.empty_like(positive_group), torch.empty_like(
        positive_group
    )


@torch.library.register_fake("aploss::rank_sort_labels")
def _rank_sort_labels_fake(targets):
    return torch.empty_like(targets, dtype=torch.int8)


def _family_stage_fakes(positives, loss_dtype):
    num_pos = positives.shape[1]
    state = positives.new_empty((STATE_ROWS, num_pos + 1))
    return state, positives.new_empty((2, num_pos))


@torch.library.register_fake("aploss::rank_sort_stage")
def _rank_sort_stage_fake(positives, offsets, positive_group, positions, false_positives, targets,
                          delta, loss_dtype):
    state, positive_grads = _family_stage_fakes(positives, loss_dtype)
    loss = positives.new_empty((), dtype=loss_dtype)
    return loss, positives.new_empty((2,), dtype=loss_dtype), state, positive_grads


@torch.library.register_fake("aploss::alrp_stage")
def _alrp_stage_fake(positives, offsets, positive_group, positions, memory_rank, false_positives,
                     regression_losses, delta, loss_dtype):
    state, positive_grads = _family_stage_fakes(positives, loss_dtype)
    loss = positives.new_empty((), dtype=loss_dtype)
    return loss, positives.new_empty((positives.shape[1],)), state, positive_grads


@torch.library.register_fake("aploss::pass1")
def _pass1_fake(scores, labels, codes, positives, offsets, positive_group, delta, method):
    return positives.new_empty((positives.shape[1],))


@torch.library.register_fake("aploss::positive_stage")
def _positive_stage_fake(positives, offsets, positive_group, positions, false_positives, delta,
                         interpolate, loss_dtype, method):
    state, positive_grads = _family_stage_fakes(positives, loss_dtype)
    return positives.new_empty((), dtype=loss_dtype), state, positive_grads


def _setup_context(ctx, inputs, output):
    scores, labels, group_ids, delta, interpolate, method = inputs
    _, state, offsets, codes, positive_grads = output
    ctx.mark_non_differentiable(state, offsets, codes, positive_grads)
    ctx.set_materialize_grads(False)  # no zero gradients made for the O(P) outputs
    # O(P) state plus references to the inputs: nothing N-sized is allocated here.
    ctx.save_for_backward(scores, labels, codes, state, offsets, positive_grads)
    ctx.grouped = group_ids is not None
    ctx.delta = delta
    ctx.method = method


def _backward(ctx, grad_loss, *_):
    scores, labels, codes, state, offsets, positive_grads = ctx.saved_tensors
    grad_scores = torch.ops.aploss.pass2(
        grad_loss, scores, labels, codes if ctx.grouped else None, state, offsets,
        positive_grads, ctx.delta, ctx.method,
    )
    return grad_scores, None, None, None, None, None


torch.library.register_autograd("aploss::ap_loss_forward", _backward, setup_context=_setup_context)


def _save_for_pass2(ctx, scores, group_ids, delta, labels, state, offsets, codes,
                    positive_grads, non_differentiable):
    """What the family's backward (pass 2 with the positives' own gradients) reads: the
    O(P) state and per-positive gradients, the labels the passes read, scores."""
    ctx.mark_non_differentiable(*non_differentiable)
    ctx.set_materialize_grads(False)  # no zero gradients made for the O(P) outputs
    ctx.save_for_backward(scores, labels, codes, state, offsets, positive_grads)
    ctx.grouped = group_ids is not None
    ctx.delta = delta


def _family_pass2(ctx, grad_loss):
    scores, labels, codes, state, offsets, positive_grads = ctx.saved_tensors
    return torch.ops.aploss.pass2(
        grad_loss, scores, labels, codes if ctx.grouped else None, state, offsets,
        positive_grads, ctx.delta, "sorted",
    )


def _setup_rank_sort_context(ctx, inputs, output):
    scores, targets, group_ids, delta = inputs
    _, parts, state, offsets, codes, labels, positive_grads = output
    # labels: the int8 labels of the targets.
    _save_for_pass2(ctx, scores, group_ids, delta, labels, state, offsets, codes,
                    positive_grads, (parts, state, offsets, codes, labels, positive_grads))


def _rank_sort_backward(ctx, grad_loss, *_):
    return _family_pass2(ctx, grad_loss), None, None, None


torch.library.register_autograd(
    "aploss::rank_sort_forward", _rank_sort_backward, setup_context=_setup_rank_sort_context
)


def _setup_alrp_context(ctx, inputs, output):
    scores, labels, regression_losses, group_ids, delta = inputs
    _, loc_weights, state, offsets, codes, positive_grads = output
    _save_for_pass2(ctx, scores, group_ids, delta, labels, state, offsets, codes,
                    positive_grads, (loc_weights, state, offsets, codes, positive_grads))


def _alrp_backward(ctx, grad_loss, *_):
    # The localisation component is differentiated outside the operator (loss.py).
    return _family_pass2(ctx, grad_loss), None, None, None, None


torch.library.register_autograd(
    "aploss::alrp_forward", _alrp_backward, setup_context=_setup_alrp_context
)


def _no_double_backward(ctx, grad):
    raise RuntimeError(
        "aploss_cuda's losses do not support double backward: their gradient is the "
        "error-driven update, not the derivative of a function, so it has no derivative"
    )


def _setup_backward_context(ctx, inputs, output):
    pass


torch.library.register_autograd(
    "aploss::pass2", _no_double_backward, setup_context=_setup_backward_context
)


@torch.library.register_vmap("aploss::ap_loss_forward")
def _no_vmap(info, in_dims, *args):
    raise RuntimeError(
        "ap_loss does not support torch.vmap: it ranks every entry of its input as one "
        "ranking. For one ranking per example, pass group_ids (e.g. "
        "group_ids=torch.arange(B).view(B, *[1] * (scores.dim() - 1))): the loss is then the "
        "mean of the examples' AP-losses; for separate losses, call ap_loss per example"
    )
