"""Fake (meta) and vmap implementations of the aploss operators (csrc/ops.cpp), the
pattern of PyTorch's custom C++/CUDA operator tutorial; the forward operators' autograd
is in C++ (csrc/autograd.cpp), pass 2's (no derivative) here, with the switch that lets
pass 2 trust the forward's outputs."""

import contextlib

import torch

from . import _C  # TORCH_LIBRARY registrations run on import


def _positives_fakes(like, width):
    positives = like.new_empty((2, width), dtype=torch.float64)
    return positives, like.new_empty((width,), dtype=torch.int64)


@torch.library.register_fake("aploss::ap_loss_forward")
def _forward_fake(scores, labels, group_ids, delta, interpolate, method):
    torch._check(scores.shape == labels.shape, lambda: "labels.shape must equal scores.shape")
    state, offsets = _state_and_offsets_fakes(scores)
    return (scores.new_empty(()), state, offsets, _codes_fake(scores, group_ids),
            _positive_grads_fake(scores), _classes_fake(scores))


def _state_and_offsets_fakes(scores):
    """The state's bytes and U + 1 offsets, data-dependent; each symbol must be a size."""
    ctx = torch.library.get_ctx()
    state = scores.new_empty((ctx.new_dynamic_size(min=1),), dtype=torch.uint8)
    return state, scores.new_empty((ctx.new_dynamic_size(min=1),), dtype=torch.int64)


def _positive_grads_fake(like):
    """(P, 2) float64 [position, gradient]."""
    return like.new_empty((torch.library.get_ctx().new_dynamic_size(), 2), dtype=torch.float64)


def _classes_fake(scores):
    """The entries' packed classes (empty where pass 2 reads the labels)."""
    return scores.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)


def _codes_fake(scores, group_ids):
    if group_ids is None:
        return scores.new_empty((0,), dtype=torch.int32)
    return group_ids.new_empty(group_ids.shape, dtype=torch.int32)  # contiguous


@torch.library.register_fake("aploss::rank_sort_forward")
def _rank_sort_forward_fake(scores, targets, group_ids, delta):
    torch._check(scores.shape == targets.shape, lambda: "targets.shape must equal scores.shape")
    state, offsets = _state_and_offsets_fakes(scores)
    return (
        scores.new_empty(()),
        scores.new_empty((2,)),
        state,
        offsets,
        _codes_fake(scores, group_ids),
        # the int8 labels of the targets, flat (empty where pass 2 reads the classes)
        scores.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int8),
        _positive_grads_fake(scores),
        _classes_fake(scores),
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
        scores.new_empty((num_pos, 2), dtype=torch.float64),
        _classes_fake(scores),
    )


@torch.library.register_fake("aploss::pass2")
def _pass2_fake(grad_output, scores, labels, classes, group_codes, state, offsets, positive_grads,
                delta, method):
    return torch.empty_like(scores)


@contextlib.contextmanager
def forward_outputs_trusted():
    """Pass 2 on this thread skips the O(P) checks of what it is given: the forward's own
    outputs, saved for backward (autograd refuses them once modified in place)."""
    previous = _C._trust_forward_outputs(True)
    try:
        yield
    finally:
        _C._trust_forward_outputs(previous)


NO_DOUBLE_BACKWARD = (
    "aploss_cuda's losses do not support double backward: their gradient is the error-driven "
    "update, not the derivative of a function, so it has no derivative"
)


def _pass2_setup_context(ctx, inputs, output):
    pass


def _pass2_backward(ctx, grad):
    raise RuntimeError(NO_DOUBLE_BACKWARD)


# Pass 2 has no derivative. Registered in Python, not C++, so that torch.func transforms
# (which cannot run a C++ autograd::Function) can call it in a loss's backward.
torch.library.register_autograd("aploss::pass2", _pass2_backward, setup_context=_pass2_setup_context)


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
    state = positives.new_empty((torch.library.get_ctx().new_dynamic_size(min=1),), dtype=torch.uint8)
    return state, positives.new_empty((num_pos, 2))


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


# The backward of every forward operator (pass 2) is registered in C++, for the Autograd
# dispatch key (csrc/autograd.cpp): a call then runs no Python between its operators.


@torch.library.register_vmap("aploss::ap_loss_forward")
def _no_vmap(info, in_dims, *args):
    raise RuntimeError(
        "ap_loss does not support torch.vmap: it ranks every entry of its input as one "
        "ranking. For one ranking per example, pass group_ids (e.g. "
        "group_ids=torch.arange(B).view(B, *[1] * (scores.dim() - 1))): the loss is then the "
        "mean of the examples' AP-losses; for separate losses, call ap_loss per example"
    )
