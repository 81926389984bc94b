"""Baselines that aploss_cuda is compared against.

- ``per_positive_loop``: the pattern of the authors' released code. One vector pass
  over the relevant negatives (those not pruned by ``min positive - delta``) per
  positive, positives visited in ascending score order; fp, rank, precision, the
  interpolated precision and the error-driven gradient are computed in the forward
  pass (as the released code does) and backward only scales the stored gradient.
  One Python iteration per positive: O(P * N_relevant) work, P iterations.
- ``dense_vectorized``: what a user writes in an afternoon. Tiles the P x N matrix of
  H(s_j - q_i) in chunks of positives; forward sums it (fp and rank), backward
  recomputes each chunk and reduces it against the weights w (a mat-vec).
  O(P * N) work, O(chunk * N) memory.
- ``focal_loss``: sigmoid focal loss forward (+ backward by autograd) as the cost
  yardstick, over the non-ignored entries as RetinaNet computes it;
  ``focal_loss_unmasked`` over the whole tensor, focal loss at its cheapest.
  torchvision's when it is installed, else the same formula.

Both AP-loss baselines compute in the dtype of ``scores`` and return a 0-dim loss
whose backward is the error-driven gradient (times the incoming gradient).
"""

import torch


def _step(x, delta):
    return torch.clamp(x / (2 * delta) + 0.5, min=0.0, max=1.0)


def _step_tile(neg, q, delta):
    """H(neg_j - q_i) as a len(q) x len(neg) tile, in place after the first op."""
    return (neg[None, :] - q[:, None]).mul_(0.5 / delta).add_(0.5).clamp_(0.0, 1.0)


def _flat_labels(labels):
    y = labels.reshape(-1)
    if y.dtype == torch.bool:
        y = y.to(torch.int8)
    return y


class _StoredGradient(torch.autograd.Function):
    """loss computed together with its gradient; backward returns grad * grad_output."""

    @staticmethod
    def forward(ctx, scores, loss, grad):
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None


def _with_gradient(scores, loss, flat_grad):
    if scores.requires_grad and torch.is_grad_enabled():
        return _StoredGradient.apply(scores, loss, flat_grad.reshape(scores.shape))
    return loss


def per_positive_loop(scores, labels, delta=1.0, interpolate=True):
    """AP-loss the way the released code computes it: a Python loop over positives."""
    s = scores.reshape(-1)
    y = _flat_labels(labels)
    with torch.no_grad():
        sd = s.detach()
        fg_mask = y == 1
        fg = sd[fg_mask]
        num_fg = fg.numel()
        grad = torch.zeros_like(sd)
        if num_fg == 0:
            loss = sd.new_zeros(())
    if num_fg == 0:
        return _with_gradient(scores, loss, grad)
    with torch.no_grad():
        threshold = fg.min() - delta
        # Pruning: only negatives above min positive - delta can have H > 0.
        bg_mask = (y == 0) & (sd > threshold)
        bg = sd[bg_mask]
        bg_grad = torch.zeros_like(bg)
        fg_grad = torch.zeros_like(fg)
        prec = torch.zeros_like(fg)
        max_prec = 0.0
        order = torch.argsort(fg)
        for ii in order.tolist():
            fg_rel = _step(fg - fg[ii], delta)
            fg_rel[ii] = 0  # i != k in rank_pos
            bg_rel = _step(bg - fg[ii], delta)
            rank_pos = 1 + fg_rel.sum()
            fp = bg_rel.sum()
            rank = rank_pos + fp
            cur_prec = rank_pos / rank
            if not interpolate or max_prec <= cur_prec:  # .item()-style sync, as released
                max_prec = cur_prec
                bg_grad += bg_rel / rank
            else:
                bg_grad += (bg_rel / rank) * ((1 - max_prec) / (1 - cur_prec))
            fg_grad[ii] = -(1 - max_prec)
            prec[ii] = max_prec
        grad[fg_mask] = fg_grad
        grad[bg_mask] = bg_grad
        grad /= num_fg
        loss = 1 - prec.mean()
    return _with_gradient(scores, loss, grad)


class _Dense(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, labels, delta, interpolate, chunk_elems):
        s = scores.reshape(-1)
        y = _flat_labels(labels)
        pos_idx = torch.nonzero(y == 1).reshape(-1)
        neg_idx = torch.nonzero(y == 0).reshape(-1)
        num_pos = pos_idx.numel()
        ctx.delta, ctx.shape = delta, scores.shape
        if num_pos == 0:
            ctx.empty = True
            return s.new_zeros(())
        ctx.empty = False
        q, order = torch.sort(s[pos_idx])  # ascending
        neg = s[neg_idx]
        rows = max(1, chunk_elems // max(neg.numel(), num_pos, 1))
        fp = torch.empty_like(q)
        rank_pos = torch.empty_like(q)
        for a in range(0, num_pos, rows):
            qc = q[a : a + rows]
            fp[a : a + rows] = _step_tile(neg, qc, delta).sum(1)
            # the self term H(0) = 1/2 is in the row sum: take it back out
            rank_pos[a : a + rows] = 0.5 + _step_tile(q, qc, delta).sum(1)
        rank = rank_pos + fp
        prec = rank_pos / rank
        ip = torch.cummax(prec, 0).values if interpolate else prec
        c = torch.where(ip > prec, (1 - ip) / (1 - prec), torch.ones_like(prec))
        w = c / rank
        ctx.save_for_backward(q, order, pos_idx, neg_idx, neg, ip, w)
        ctx.rows = rows
        return 1 - ip.mean()

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.empty:
            zeros = torch.zeros(ctx.shape, dtype=grad_output.dtype, device=grad_output.device)
            return zeros, None, None, None, None
        q, order, pos_idx, neg_idx, neg, ip, w = ctx.saved_tensors
        num_pos = q.numel()
        gneg = torch.zeros_like(neg)
        for a in range(0, num_pos, ctx.rows):
            gneg += w[a : a + ctx.rows] @ _step_tile(neg, q[a : a + ctx.rows], ctx.delta)
        grad = torch.zeros(ctx.shape.numel(), dtype=q.dtype, device=q.device)
        grad[neg_idx] = gneg * (grad_output / num_pos)
        grad[pos_idx[order]] = -(1 - ip) * (grad_output / num_pos)
        return grad.reshape(ctx.shape), None, None, None, None


def dense_vectorized(scores, labels, delta=1.0, interpolate=True, *, chunk_elems=None):
    """AP-loss by dense P x N tiles of H, ``chunk_elems`` matrix entries at a time
    (default 2**24 on the CPU = 64 MiB of float32, 2**28 on CUDA)."""
    if chunk_elems is None:
        chunk_elems = 2**28 if scores.is_cuda else 2**24
    return _Dense.apply(scores, labels, float(delta), bool(interpolate), int(chunk_elems))


try:
    from torchvision.ops import sigmoid_focal_loss as _tv_focal

    FOCAL_SOURCE = "torchvision.ops.sigmoid_focal_loss"
except Exception:  # pragma: no cover - torchvision is optional
    _tv_focal = None
    FOCAL_SOURCE = "inline formula (torchvision not installed)"


def _focal_formula(inputs, targets, alpha=0.25, gamma=2.0, reduction="sum"):
    p = torch.sigmoid(inputs)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = alpha_t * loss
    return loss.sum() if reduction == "sum" else loss


def focal_loss(scores, labels):
    """Sigmoid focal loss (alpha 0.25, gamma 2, sum) over the non-ignored entries, the
    RetinaNet/detectron2 pattern: select the valid entries, targets = (label == 1)."""
    valid = labels >= 0
    targets = (labels[valid] == 1).to(scores.dtype)
    fn = _tv_focal if _tv_focal is not None else _focal_formula
    return fn(scores[valid], targets, alpha=0.25, gamma=2, reduction="sum")


def focal_loss_unmasked(scores, labels):
    """Sigmoid focal loss over the whole tensor, ignored entries as negatives: no
    selection of the valid entries, so focal loss at its cheapest."""
    fn = _tv_focal if _tv_focal is not None else _focal_formula
    return fn(scores, (labels == 1).to(scores.dtype), alpha=0.25, gamma=2, reduction="sum")
