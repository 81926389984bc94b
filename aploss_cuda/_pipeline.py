"""The one code path of every loss: ``forward(loss, ...)`` runs the operator
``aploss::loss`` (csrc/pipeline.h), or, with a process group, the same stages
across ranks (distributed.py). A loss's Python function supplies only what is its own:
its inputs (validated and prepared by ``inputs()``) and what it makes of ``extra``."""

import torch

from . import _transforms, distributed


def forward(loss, scores, inputs, *, group_ids=None, delta, interpolate=False, method="sorted",
            process_group=None, per_positive_extra=False):
    """(loss value, extra) of the loss named ``loss`` (csrc/losses.h).

    scores: the scores as the user passed them (the gradient goes to them).
    inputs(): validates the call and returns (scores, labels, values) as the operator
        takes them; run on every rank before the first collective, so that an invalid
        input on one rank raises on every rank instead of leaving them waiting.
    per_positive_extra: extra holds one value per positive in their memory order (each
        rank then gets its own positives' values).
    """
    if process_group is not None:
        return distributed.across_ranks(
            loss, process_group, scores, inputs, group_ids=group_ids, delta=delta,
            interpolate=interpolate, method=method, per_positive_extra=per_positive_extra,
        )
    scores, labels, values = inputs()
    args = (loss, scores, labels, values, group_ids, float(delta), bool(interpolate), method)
    if torch.compiler.is_compiling():
        # Every output in the graph: the sizes of what the backward reads are data-dependent
        # symbols, which torch.compile must see returned.
        out = torch.ops.aploss.loss_forward(*args)
    elif _transforms.active():  # a torch.func transform or forward-mode AD
        out = _transforms.forward(*args)
    else:
        out = torch.ops.aploss.loss(*args)
    return out[0], out[1]
