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

from ._ops import NO_DOUBLE_BACKWARD, forward_outputs_trusted, no_vmap_error


def active():
    """Whether a torch.func transform or a forward-mode AD level is active."""
    if torch.compiler.is_compiling():
        return False
    return peek_interpreter_stack() is not None or _forward_ad._current_level >= 0


def forward(*args):
    """torch.ops.aploss.loss_forward(*args) under a transform: the same outputs."""
    return _UnderTransforms.apply(*args)


class _UnderTransforms(torch.autograd.Function):
    @staticmethod
    def forward(*args):
        with torch._C._AutoDispatchBelowAutograd():
            return torch.ops.aploss.loss_forward(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        loss, scores, labels, values, group_ids, delta, interpolate, method = inputs
        _, _, state, offsets, codes, pass_labels, positive_grads, classes = output
        # The labels pass 2 reads: the forward's where it converted them (N of them).
        read = pass_labels if pass_labels.numel() == scores.numel() else labels
        ctx.save_for_backward(scores, read, classes, codes, state, offsets, positive_grads)
        ctx.grouped = group_ids is not None
        ctx.delta = delta
        ctx.method = "pairwise" if method == "pairwise" else "sorted"
        ctx.mark_non_differentiable(*output[1:])

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        scores, labels, classes, codes, state, offsets, positive_grads = ctx.saved_tensors
        grad = _Pass2.apply(grad_loss, scores, labels, classes, codes if ctx.grouped else None,
                            state, offsets, positive_grads, ctx.delta, ctx.method)
        return None, grad, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(
            "aploss_cuda's losses have no forward-mode derivative (torch.func.jvp, jacfwd, "
            "hessian, torch.autograd.forward_ad): their gradient is the error-driven update "
            "of the paper, not the derivative of the loss. Use loss.backward(), "
            "torch.autograd.grad, or torch.func.grad / vjp / jacrev, which give that update"
        )

    @staticmethod
    def vmap(info, in_dims, loss, *args):
        raise no_vmap_error(loss)


class _Pass2(torch.autograd.Function):
    """Pass 2 on the forward's own outputs, as a function that transforms can record (the
    operator's registered autograd cannot run under them): a transform that
    differentiates it again raises, as double backward does."""

    generate_vmap_rule = True  # a batch of incoming gradients: the operator's vmap rule

    @staticmethod
    def forward(*args):
        with forward_outputs_trusted(), torch._C._AutoDispatchBelowAutograd():
            return torch.ops.aploss.loss_backward(*args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(NO_DOUBLE_BACKWARD)


@torch.library.register_vmap("aploss::loss_backward")
def _pass2_vmap(info, in_dims, grad_output, *rest):
    """Pass 2 with a batch of incoming gradients (jacrev's cotangents): one pass per
    incoming gradient, each exactly what backward() computes for it."""
    if any(dim is not None for dim in in_dims[1:]):
        raise RuntimeError(
            "aploss::loss_backward under vmap: only the incoming gradient may be batched (the losses "
            "do not support vmap over their inputs)"
        )
    dim = in_dims[0]
    with torch._C._AutoDispatchBelowAutograd():
        grads = [torch.ops.aploss.loss_backward(grad_output.select(dim, b), *rest)
                 for b in range(grad_output.shape[dim])]
    return torch.stack(grads), 0
