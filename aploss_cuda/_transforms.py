"""The losses under torch.func transforms and forward-mode AD.

The forward operators' autograd is a C++ function (csrc/autograd.cpp), which functorch
cannot run. Under a transform the losses take this path instead: the same operators
below autograd, wrapped in a Python ``autograd.Function`` whose backward is the same pass 2.
So ``torch.func.grad``, ``vjp`` and ``jacrev`` give the error-driven gradient that
``.backward()`` gives; forward-mode AD (``torch.func.jvp``, ``jacfwd``, ``hessian``,
``torch.autograd.forward_ad``) and ``vmap`` over the scores are refused with an error that
says why: the gradient is an update rule, not the derivative of the loss.
"""

import torch
import torch.autograd.forward_ad as _forward_ad
from torch._C._functorch import peek_interpreter_stack

from ._ops import NO_DOUBLE_BACKWARD, forward_outputs_trusted


def active():
    """Whether a torch.func transform or a forward-mode AD level is active."""
    if torch.compiler.is_compiling():
        return False
    return peek_interpreter_stack() is not None or _forward_ad._current_level >= 0


# Where each forward operator keeps what pass 2 reads: its argument indices of group_ids
# and delta (and method), and the output indices of state, offsets, codes, positive_grads,
# classes and (Rank & Sort) the labels pass 2 reads instead of the targets.
_LAYOUT = {
    "ap_loss_forward": dict(group_ids=2, delta=3, method=5, labels=None,
                            state=1, offsets=2, codes=3, positive_grads=4, classes=5),
    "rank_sort_forward": dict(group_ids=2, delta=3, method=None, labels=5,
                              state=2, offsets=3, codes=4, positive_grads=6, classes=7),
    "alrp_forward": dict(group_ids=3, delta=4, method=None, labels=None,
                         state=2, offsets=3, codes=4, positive_grads=5, classes=6),
}
_LOSS_NAMES = {"ap_loss_forward": "ap_loss", "rank_sort_forward": "rank_sort_loss",
               "alrp_forward": "alrp_loss"}


def forward(op_name, *args):
    """torch.ops.aploss.<op_name>(*args) under a transform: the same outputs."""
    return _UnderTransforms.apply(op_name, *args)


class _UnderTransforms(torch.autograd.Function):
    @staticmethod
    def forward(op_name, *args):
        with torch._C._AutoDispatchBelowAutograd():
            return getattr(torch.ops.aploss, op_name)(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        op_name, scores, labels, *_ = inputs
        layout = _LAYOUT[op_name]
        args = inputs[1:]
        where = {key: output[i] for key, i in layout.items()
                 if key in ("state", "offsets", "codes", "positive_grads", "classes")}
        pass2_labels = labels if layout["labels"] is None else output[layout["labels"]]
        ctx.save_for_backward(scores, pass2_labels, where["classes"], where["codes"],
                              where["state"], where["offsets"], where["positive_grads"])
        ctx.grouped = args[layout["group_ids"]] is not None
        ctx.delta = args[layout["delta"]]
        pairwise = layout["method"] is not None and args[layout["method"]] == "pairwise"
        ctx.method = "pairwise" if pairwise else "sorted"
        ctx.num_inputs = len(inputs)
        ctx.mark_non_differentiable(*output[1:])

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        scores, labels, classes, codes, state, offsets, positive_grads = ctx.saved_tensors
        grad = _Pass2.apply(grad_loss, scores, labels, classes, codes if ctx.grouped else None,
                            state, offsets, positive_grads, ctx.delta, ctx.method)
        return (None, grad) + (None,) * (ctx.num_inputs - 2)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(
            "aploss_cuda's losses have no forward-mode derivative (torch.func.jvp, jacfwd, "
            "hessian, torch.autograd.forward_ad): their gradient is the error-driven update "
            "of the paper, not the derivative of the loss. Use loss.backward(), "
            "torch.autograd.grad, or torch.func.grad / vjp / jacrev, which give that update"
        )

    @staticmethod
    def vmap(info, in_dims, op_name, *args):
        raise RuntimeError(
            f"{_LOSS_NAMES[op_name]} does not support torch.vmap: it ranks every entry of its "
            "input as one ranking. For one ranking per example, pass group_ids (e.g. "
            "group_ids=torch.arange(B).view(B, *[1] * (scores.dim() - 1))): the loss is then "
            "the mean of the examples' losses; for separate losses, call it per example"
        )


class _Pass2(torch.autograd.Function):
    """Pass 2 on the forward's own outputs, as a function that transforms can record (the
    operator's registered autograd cannot run under them): a transform that
    differentiates it again raises, as double backward does."""

    generate_vmap_rule = True  # a batch of incoming gradients: the operator's vmap rule

    @staticmethod
    def forward(*args):
        with forward_outputs_trusted(), torch._C._AutoDispatchBelowAutograd():
            return torch.ops.aploss.pass2(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(NO_DOUBLE_BACKWARD)


@torch.library.register_vmap("aploss::pass2")
def _pass2_vmap(info, in_dims, grad_output, *rest):
    """Pass 2 with a batch of incoming gradients (jacrev's cotangents): one pass per
    incoming gradient, each exactly what backward() computes for it."""
    if any(dim is not None for dim in in_dims[1:]):
        raise RuntimeError(
            "aploss::pass2 under vmap: only the incoming gradient may be batched (the losses "
            "do not support vmap over their inputs)"
        )
    dim = in_dims[0]
    with torch._C._AutoDispatchBelowAutograd():
        grads = [torch.ops.aploss.pass2(grad_output.select(dim, b), *rest)
                 for b in range(grad_output.shape[dim])]
    return torch.stack(grads), 0
