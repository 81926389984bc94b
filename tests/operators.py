"""The C++ operators that tests call directly (torch.ops.aploss), by role, in one place.

Tests go through the public Python API where they can; the few that must reach an
operator (opcheck, the operators' own input checks, the stages aploss_cuda.distributed
composes) call it through this table, so that renaming an operator or changing its
arguments touches this file only.
"""

import types

import torch

import aploss_cuda  # noqa: F401  (registers the operators)

# Each operator's name in torch.ops.aploss, by its role: one forward, one backward and
# one last stage for every loss, which takes the loss's name. "loss" is the forward as the
# losses' Python functions call it: its first two outputs (loss, extra), the rest kept
# for the backward by its autograd.
NAMES = {
    "loss": "loss",
    "forward": "loss_forward",
    "backward": "loss_backward",
    "loss_labels": "loss_labels",
    "positive_values": "positive_values",
    "gather": "gather",
    "rank_positives": "rank_positives",
    "pass1": "pass1",
    "stage": "positive_stage",
}

# The operators' name of each loss.
LOSS_NAMES = {"ap": "ap_loss", "rank_sort": "rank_sort_loss", "alrp": "alrp_loss"}


def operator(role):
    """The OpOverload of the operator with this role, looked up when called: a missing
    operator fails the tests that call it, not the collection of every module."""
    return getattr(torch.ops.aploss, NAMES[role]).default


def forward_operator(loss):
    """The OpOverload of `loss`'s one-call forward."""
    return operator("forward")


def forward_args(loss, scores, second, group_ids=None, delta=1.0, *, regression_losses=None,
                 interpolate=True, method="sorted"):
    """The forward operator's arguments: `second` is the labels (AP, aLRP) or the targets
    (Rank & Sort); `interpolate` is AP-loss's only."""
    return (LOSS_NAMES[loss], scores, second, regression_losses, group_ids, delta,
            interpolate if loss == "ap" else False, method)


def forward(loss, *args, **kwargs):
    """The forward operator's raw outputs (forward_args's arguments)."""
    return forward_operator(loss)(*forward_args(loss, *args, **kwargs))


# Where the forward keeps what the backward reads (its output indices); Rank & Sort's
# backward reads the int8 labels the forward made of the targets.
_SAVED = dict(loss=0, extra=1, state=2, offsets=3, codes=4, positive_grads=6, classes=7)


def saved(loss, outputs):
    """The forward's outputs by name: loss, extra, state, offsets, codes, positive_grads,
    classes (and Rank & Sort's labels)."""
    kept = {name: outputs[i] for name, i in _SAVED.items()}
    if loss == "rank_sort":
        kept["labels"] = outputs[5]
    return types.SimpleNamespace(**kept)
def backward_operator():
    return operator("backward")


def backward_call_args(grad_output, scores, labels, classes, codes, state, offsets,
                       positive_grads, delta, method="sorted"):
    """The backward operator's arguments, by name (codes: None for one ranking)."""
    return (grad_output, scores, labels, classes, codes, state, offsets, positive_grads, delta,
            method)


def backward_args(loss, outputs, grad_output, scores, labels, grouped, delta=1.0, method="sorted"):
    """The backward operator's arguments after `forward(loss, ...)` gave `outputs`
    (`labels`: the forward's; Rank & Sort's backward reads the ones its forward made)."""
    kept = saved(loss, outputs)
    return backward_call_args(grad_output, scores, getattr(kept, "labels", labels), kept.classes,
                              kept.codes if grouped else None, kept.state, kept.offsets,
                              kept.positive_grads, delta, method)


def backward(*args, **kwargs):
    """The backward operator, called with backward_call_args's arguments."""
    return backward_operator()(*backward_call_args(*args, **kwargs))


# ---- the stages aploss_cuda.distributed composes ------------------------------------------

def loss_stage_operator(loss):
    """Each loss's last stage: its loss, extra, state and positive gradients from the ranked
    positives."""
    return operator("stage")


def gather(scores, labels, codes):
    return operator("gather")(scores, labels, codes)


def rank_positives(gathered, num_groups, delta):
    """(positives, offsets, positive_group, positions, memory_rank)."""
    return operator("rank_positives")(gathered, num_groups, delta)


def pass1_args(scores, labels, codes, positives, offsets, positive_group, delta, method="sorted"):
    return (scores, labels, codes, positives, offsets, positive_group, delta, method)


def pass1(*args, **kwargs):
    return operator("pass1")(*pass1_args(*args, **kwargs))


def labels_args(loss, second):
    """loss_labels's arguments: the loss and its labels input."""
    return (LOSS_NAMES[loss], second)


def positive_values_args(loss, scores, second, regression_losses, positions):
    """positive_values's arguments: the loss's inputs and the positives' flat positions."""
    return (LOSS_NAMES[loss], scores, second, regression_losses, positions)


def rank_sort_labels(targets):
    """The int8 labels Rank & Sort's stages read, from its targets."""
    return operator("loss_labels")(*labels_args("rank_sort", targets)).view(targets.shape)


def loss_stage_args(loss, ranked, false_positives, delta, *, per_positive=None, interpolate=True,
                    loss_dtype=torch.float64):
    """The last stage's arguments: `ranked` is rank_positives's outputs; `per_positive` the
    positives' targets (Rank & Sort) or regression losses (aLRP) in their memory order."""
    positives, offsets, group, positions, memory_rank = ranked
    return (LOSS_NAMES[loss], positives, offsets, group, positions, memory_rank,
            false_positives, per_positive, delta, interpolate if loss == "ap" else False,
            loss_dtype, "sorted")


def per_positive(loss, ranked, targets=None, regression_losses=None):
    """loss_stage's per_positive from the loss's own inputs, in the positives' memory
    order: the targets at the positives' positions, or the regression losses (given so)."""
    positions = ranked[3]
    if loss == "rank_sort":
        return targets.reshape(-1)[positions.sort().values].double()
    if loss == "alrp":
        return regression_losses.double()
    return None


def loss_stage(loss, *args, **kwargs):
    """(loss, extra, state, positive_grads): the last stage's outputs."""
    return loss_stage_operator(loss)(*loss_stage_args(loss, *args, **kwargs))
