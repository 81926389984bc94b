"""Fake (meta) and vmap implementations of the aploss operators (csrc/ops.cpp), the
pattern of PyTorch's custom C++/CUDA operator tutorial; the autograd of loss and
loss_forward is in C++ (csrc/autograd.cpp), loss_backward's (no derivative) here, with the
switch that lets pass 2 trust the forward's outputs."""

import contextlib

import torch

from . import _C  # TORCH_LIBRARY registrations run on import


def _positives_fakes(like, width):
    positives = like.new_empty((2, width), dtype=torch.float64)
    return positives, like.new_empty((width,), dtype=torch.int64)


@torch.library.register_fake("aploss::loss")
def _loss_fake(loss, scores, labels, values, group_ids, delta, interpolate, method):
    torch._check(scores.shape == labels.shape, lambda: "labels.shape must equal scores.shape")
    return scores.new_empty(()), _dynamic_1d(scores, torch.float64)  # loss, extra


@torch.library.register_fake("aploss::loss_forward")
def _loss_forward_fake(loss, scores, labels, values, group_ids, delta, interpolate, method):
    out = _loss_fake(loss, scores, labels, values, group_ids, delta, interpolate, method)
    state, offsets = _state_and_offsets_fakes(scores)
    return (
        *out,
        state,
        offsets,
        _codes_fake(scores, group_ids, method),
        _dynamic_1d(scores, torch.int8),  # the labels pass 2 reads, or empty
        _positive_grads_fake(scores),
        _dynamic_1d(scores, torch.int64),  # the entries' packed classes, or empty
    )


def _dynamic_1d(like, dtype):
    return like.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=dtype)


def _state_and_offsets_fakes(scores):
    """The state's bytes and U + 1 offsets, data-dependent; each symbol must be a size."""
    ctx = torch.library.get_ctx()
    state = scores.new_empty((ctx.new_dynamic_size(min=1),), dtype=torch.uint8)
    return state, scores.new_empty((ctx.new_dynamic_size(min=1),), dtype=torch.int64)


def _positive_grads_fake(like):
    """(P, 2) float64 [position, gradient]."""
    return like.new_empty((torch.library.get_ctx().new_dynamic_size(), 2), dtype=torch.float64)


def _codes_fake(scores, group_ids, method):
    """int32 dense codes shaped like group_ids (contiguous); with one id per entry, on a
    device whose pass 1 records each entry's interval for pass 2, those intervals as uint32
    (csrc/pipeline.h, records_intervals)."""
    if group_ids is None:
        return scores.new_empty((0,), dtype=torch.int32)
    recorded = (method != "pairwise" and group_ids.numel() == scores.numel()
                and scores.device.type == "cpu" and _C._records_intervals("cpu"))
    return group_ids.new_empty(group_ids.shape, dtype=torch.uint32 if recorded else torch.int32)


@torch.library.register_fake("aploss::loss_backward")
def _loss_backward_fake(grad_output, scores, labels, classes, group_codes, state, offsets,
                        positive_grads, delta, method):
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


def _backward_setup_context(ctx, inputs, output):
    pass


def _backward_backward(ctx, grad):
    raise RuntimeError(NO_DOUBLE_BACKWARD)


# Pass 2 has no derivative. Registered in Python, not C++, so that torch.func transforms
# (which cannot run a C++ autograd::Function) can call it in a loss's backward.
torch.library.register_autograd(
    "aploss::loss_backward", _backward_backward, setup_context=_backward_setup_context
)


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


@torch.library.register_fake("aploss::loss_labels")
def _loss_labels_fake(loss, labels):
    return _dynamic_1d(labels, torch.int8)


@torch.library.register_fake("aploss::positive_values")
def _positive_values_fake(loss, scores, labels, values, positions):
    return _dynamic_1d(scores, torch.float64)


@torch.library.register_fake("aploss::pass1")
def _pass1_fake(scores, labels, codes, positives, offsets, positive_group, delta, method):
    return positives.new_empty((positives.shape[1],))


@torch.library.register_fake("aploss::positive_stage")
def _positive_stage_fake(loss, positives, offsets, positive_group, positions, memory_rank,
                         false_positives, values, delta, interpolate, loss_dtype, method):
    state = _dynamic_1d(positives, torch.uint8)
    return (positives.new_empty((), dtype=loss_dtype), _dynamic_1d(positives, torch.float64),
            state, positives.new_empty((positives.shape[1], 2)))


# The autograd of loss and loss_forward (pass 2 as its backward) is registered in C++, for
# the Autograd dispatch key (csrc/autograd.cpp): a call then runs no Python between its
# operators.


def no_vmap_error(loss):
    return RuntimeError(
        f"{loss} does not support torch.vmap: it ranks every entry of its input as one "
        "ranking. For one ranking per example, pass group_ids (e.g. "
        "group_ids=torch.arange(B).view(B, *[1] * (scores.dim() - 1))): the loss is then the "
        f"mean of the examples' losses; for separate losses, call {loss} per example"
    )


def _no_vmap(info, in_dims, loss, *args):
    raise no_vmap_error(loss)


torch.library.register_vmap("aploss::loss", _no_vmap)
torch.library.register_vmap("aploss::loss_forward", _no_vmap)
