"""The C++ operators that tests call directly (torch.ops.aploss), by role, in one place.

Tests go through the public Python API where they can; the few that must reach an
operator (opcheck, the operators' own input checks, the stages aploss_cuda.distributed
composes) call it through this table, so that renaming an operator or changing its
arguments touches this file only.
"""

import types

import torch

import aploss_cuda  # noqa: F401  (registers the operators)

# Each operator's name in torch.ops.aploss, by its role.
NAMES = {
    "ap_forward": "ap_loss_forward",
    "rank_sort_forward": "rank_sort_forward",
    "alrp_forward": "alrp_forward",
    "backward": "pass2",
    "gather": "gather",
    "rank_positives": "rank_positives",
    "pass1": "pass1",
    "rank_sort_labels": "rank_sort_labels",
    "ap_stage": "positive_stage",
    "rank_sort_stage": "rank_sort_stage",
    "alrp_stage": "alrp_stage",
    "pass1_histograms": "_pass1_histograms",
}


def operator(role):
    """The OpOverload of the operator with this role, looked up when called: a missing
    operator fails the tests that call it, not the collection of every module."""
    return getattr(torch.ops.aploss, NAMES[role]).default


def forward_operator(loss):
    """The OpOverload of `loss`'s one-call forward."""
    return operator(f"{loss}_forward")


def forward_args(loss, scores, second, group_ids=None, delta=1.0, *, regression_losses=None,
                 interpolate=True, method="sorted"):
    """The forward operator's arguments: `second` is the labels (AP, aLRP) or the targets
    (Rank & Sort); `interpolate` and `method` are AP-loss's only."""
    if loss == "ap":
        return (scores, second, group_ids, delta, interpolate, method)
    if loss == "rank_sort":
        return (scores, second, group_ids, delta)
    return (scores, second, regression_losses, group_ids, delta)


def forward(loss, *args, **kwargs):
    """The forward operator's raw outputs (forward_args's arguments)."""
    return forward_operator(loss)(*forward_args(loss, *args, **kwargs))


# Where each forward keeps what the backward reads (its output indices); Rank & Sort's
# backward reads the int8 labels the forward made of the targets.
_SAVED = {
    "ap": dict(loss=0, state=1, offsets=2, codes=3, positive_grads=4, classes=5),
    "rank_sort": dict(loss=0, state=2, offsets=3, codes=4, labels=5, positive_grads=6, classes=7),
    "alrp": dict(loss=0, state=2, offsets=3, codes=4, positive_grads=5, classes=6),
}


def saved(loss, outputs):
    """The forward's outputs by name: loss, state, offsets, codes, positive_grads, classes
    (and Rank & Sort's labels)."""
    return types.SimpleNamespace(**{name: outputs[i] for name, i in _SAVED[loss].items()})


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
    """Each loss's last stage: its loss, state and positive gradients from the ranked
    positives."""
    return operator(f"{loss}_stage")


def gather(scores, labels, codes):
    return operator("gather")(scores, labels, codes)


def rank_positives(gathered, num_groups, delta):
    """(positives, offsets, positive_group, positions, memory_rank)."""
    return operator("rank_positives")(gathered, num_groups, delta)


def pass1_args(scores, labels, codes, positives, offsets, positive_group, delta, method="sorted"):
    return (scores, labels, codes, positives, offsets, positive_group, delta, method)


def pass1(*args, **kwargs):
    return operator("pass1")(*pass1_args(*args, **kwargs))


def rank_sort_labels(targets):
    """The int8 labels Rank & Sort's stages read, from its targets."""
    return operator("rank_sort_labels")(targets)


def loss_stage_args(loss, ranked, false_positives, delta, *, per_positive=None, interpolate=True,
                    loss_dtype=torch.float64):
    """The last stage's arguments: `ranked` is rank_positives's outputs; `per_positive` the
    positives' targets (Rank & Sort) or regression losses (aLRP) in ranked order."""
    positives, offsets, group, positions, memory_rank = ranked
    if loss == "ap":
        return (positives, offsets, group, positions, false_positives, delta, interpolate,
                loss_dtype, "sorted")
    if loss == "rank_sort":
        return (positives, offsets, group, positions, false_positives, per_positive, delta,
                loss_dtype)
    return (positives, offsets, group, positions, memory_rank, false_positives, per_positive,
            delta, loss_dtype)


def per_positive(loss, ranked, targets=None, regression_losses=None):
    """loss_stage's per_positive from the loss's own inputs: the targets of the ranked
    positives, or the regression losses (one per positive in memory order) ranked."""
    positions, memory_rank = ranked[3], ranked[4]
    if loss == "rank_sort":
        return targets.reshape(-1)[positions]
    if loss == "alrp":
        return regression_losses[memory_rank]
    return None


def loss_stage(loss, *args, **kwargs):
    """(loss, ..., positive_grads): the last stage's outputs."""
    return loss_stage_operator(loss)(*loss_stage_args(loss, *args, **kwargs))


# ---- the deterministic pass 1's probe -----------------------------------------------------


def pass1_histograms(scores, labels, codes, positives, offsets, delta, deterministic):
    return operator("pass1_histograms")(scores, labels, codes, positives, offsets, delta,
                                        deterministic)
