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
- ``rank_sort_loop``: Rank & Sort loss (Oksuz et al., ICCV 2021) the way its released
  code computes it: the same per-positive loop (ascending score order, negatives pruned
  at ``min positive - delta``) with the ranking and sorting errors and their
  error-driven updates; returns ranking + sorting carrying the whole gradient.
- ``alrp_loop``: aLRP loss (Oksuz et al., NeurIPS 2020) the way its released code
  computes it: the per-positive loop for the classification part (error-driven
  gradient), and the localisation part by autograd from the regression losses ordered
  by descending score (``argsort(...).flip``; the sort is stable, so tied positives
  come later-in-memory first), divided by the detached ranks.
- ``focal_loss``: sigmoid focal loss forward (+ backward by autograd) as the cost
  yardstick, over the non-ignored entries as RetinaNet computes it;
  ``focal_loss_unmasked`` over the whole tensor, focal loss at its cheapest.
  torchvision's when it is installed, else the same formula.

The AP-loss, Rank & Sort and aLRP baselines compute in the dtype of ``scores`` on its
device and return a 0-dim loss whose backward is the error-driven gradient (times the
incoming gradient).
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


def rank_sort_loop(scores, targets, delta=0.5):
    """Rank & Sort loss the way the released code computes it: a Python loop over
    positives (targets > 0, target value = IoU), negatives (targets == 0) pruned at
    min positive - delta. Returns ranking + sorting with the whole gradient."""
    s = scores.reshape(-1)
    t = targets.reshape(-1)
    eps = 1e-10
    with torch.no_grad():
        sd = s.detach()
        fg_labels = t > 0
        fg_logits = sd[fg_labels]
        fg_num = fg_logits.numel()
        grad = torch.zeros_like(sd)
        if fg_num == 0:
            loss = sd.new_zeros(())
    if fg_num == 0:
        return _with_gradient(scores, loss, grad)
    with torch.no_grad():
        fg_targets = t[fg_labels].to(sd.dtype)
        threshold_logit = fg_logits.min() - delta
        relevant_bg_labels = (t == 0) & (sd >= threshold_logit)
        relevant_bg_logits = sd[relevant_bg_labels]
        relevant_bg_grad = torch.zeros_like(relevant_bg_logits)
        sorting_error = torch.zeros_like(fg_logits)
        ranking_error = torch.zeros_like(fg_logits)
        fg_grad = torch.zeros_like(fg_logits)
        for ii in torch.argsort(fg_logits).tolist():
            fg_relations = _step(fg_logits - fg_logits[ii], delta)  # self term kept: H(0)
            bg_relations = _step(relevant_bg_logits - fg_logits[ii], delta)
            rank_pos = fg_relations.sum()
            fp_num = bg_relations.sum()
            rank = rank_pos + fp_num
            ranking_error[ii] = fp_num / rank
            current_sorting_error = (fg_relations * (1 - fg_targets)).sum() / rank_pos
            iou_relations = fg_targets >= fg_targets[ii]
            target_sorted_order = iou_relations * fg_relations
            rank_pos_target = target_sorted_order.sum()
            target_sorting_error = (target_sorted_order * (1 - fg_targets)).sum() / rank_pos_target
            sorting_error[ii] = current_sorting_error - target_sorting_error
            if fp_num > eps:  # .item()-style sync, as released
                fg_grad[ii] -= ranking_error[ii]
                relevant_bg_grad += bg_relations * (ranking_error[ii] / fp_num)
            missorted_examples = (~iou_relations) * fg_relations
            sorting_pmf_denom = missorted_examples.sum()
            if sorting_pmf_denom > eps:
                fg_grad[ii] -= sorting_error[ii]
                fg_grad += missorted_examples * (sorting_error[ii] / sorting_pmf_denom)
        grad[fg_labels] = fg_grad
        grad[relevant_bg_labels] = relevant_bg_grad
        grad /= fg_num
        loss = ranking_error.mean() + sorting_error.mean()
    return _with_gradient(scores, loss, grad)


def alrp_loop(scores, labels, regression_losses, delta=1.0):
    """aLRP loss the way the released code computes it. Returns (cls_loss, loc_loss):
    cls_loss carries the error-driven gradient to scores, loc_loss is differentiable
    with respect to regression_losses (one per positive, in memory order)."""
    s = scores.reshape(-1)
    y = _flat_labels(labels)
    eps = 1e-5
    with torch.no_grad():
        sd = s.detach()
        fg_labels = y == 1
        fg_logits = sd[fg_labels]
        fg_num = fg_logits.numel()
        grad = torch.zeros_like(sd)
        if fg_num == 0:
            cls_loss = sd.new_zeros(())
    if fg_num == 0:
        return _with_gradient(scores, cls_loss, grad), regression_losses.sum()
    with torch.no_grad():
        reg = regression_losses.detach().to(sd.dtype)
        threshold_logit = fg_logits.min() - delta
        relevant_bg_labels = (y == 0) & (sd >= threshold_logit)
        relevant_bg_logits = sd[relevant_bg_labels]
        relevant_bg_grad = torch.zeros_like(relevant_bg_logits)
        rank = torch.zeros_like(fg_logits)
        prec = torch.zeros_like(fg_logits)
        fg_grad = torch.zeros_like(fg_logits)
        # stable: the tie order of the localisation part below is fixed
        order = torch.argsort(fg_logits, stable=True)
        for ii in order.tolist():
            fg_relations = _step(fg_logits - fg_logits[ii], delta)
            fg_relations[ii] = 0  # i != k in rank_pos
            bg_relations = _step(relevant_bg_logits - fg_logits[ii], delta)
            rank_pos = 1 + fg_relations.sum()
            fp_num = bg_relations.sum()
            rank[ii] = rank_pos + fp_num
            prec[ii] = rank_pos / rank[ii]
            if fp_num > eps:  # .item()-style sync, as released
                fg_grad[ii] = -((fg_relations * reg).sum() + fp_num) / rank[ii]
                relevant_bg_grad += bg_relations * (-fg_grad[ii] / fp_num)
        grad[fg_labels] = fg_grad
        grad[relevant_bg_labels] = relevant_bg_grad
        grad /= fg_num
        cls_loss = 1 - prec.mean()
    ordered_losses = regression_losses[order].flip(dims=[0])
    loc_loss = (torch.cumsum(ordered_losses, dim=0) / rank[order].flip(dims=[0])).mean()
    return _with_gradient(scores, cls_loss, grad), loc_loss


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
