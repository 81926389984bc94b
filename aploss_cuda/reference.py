"""Pure-PyTorch references of the ranking-based losses and their error-driven gradients:
AP-loss (Chen et al., TPAMI 2020), Rank & Sort loss (Oksuz et al., ICCV 2021) and aLRP
loss (Oksuz et al., NeurIPS 2020). Direct transcriptions of the definitions, in float64
on the CPU, looping over positives. They are the ground truth of the tests; keep them
obviously correct, not fast (O(P * N + P^2))."""

import torch


def step(x, delta):
    """H(x) = clamp(x / (2 delta) + 1/2, 0, 1), computed as x / delta / 2: 2 delta would
    overflow for delta > 8.9e307, and a difference of two scores that overflows to +-inf
    still lands on the right side of the clamp."""
    return (x / delta * 0.5 + 0.5).clamp(0.0, 1.0)


def ap_loss_reference(scores, labels, delta=1.0, interpolate=True):
    """Returns (loss, grad): the loss as a float64 0-dim tensor and the error-driven
    gradient d loss / d scores as float64, shaped like scores."""
    s = scores.detach().reshape(-1).to(torch.float64).cpu()
    y = labels.detach().reshape(-1).cpu()
    if y.dtype == torch.bool:
        y = y.to(torch.int64)
    pos_idx = torch.nonzero(y == 1).reshape(-1)
    neg_idx = torch.nonzero(y == 0).reshape(-1)
    grad = torch.zeros_like(s)
    num_pos = pos_idx.numel()
    if num_pos == 0:
        return torch.zeros((), dtype=torch.float64), grad.reshape(scores.shape)

    s_pos, s_neg = s[pos_idx], s[neg_idx]
    order = torch.argsort(s_pos, stable=True)  # ascending score
    rank, prec = [], []
    for i in order.tolist():
        others = torch.cat([s_pos[:i], s_pos[i + 1 :]])
        rank_pos = 1.0 + step(others - s_pos[i], delta).sum()
        fp = step(s_neg - s_pos[i], delta).sum()
        rank.append(rank_pos + fp)
        prec.append(rank_pos / (rank_pos + fp))

    ip, best = [], 0.0
    for p in prec:  # running maximum from the lowest-scored positive upward
        best = max(best, float(p)) if interpolate else float(p)
        ip.append(best)

    loss = 1.0 - sum(ip) / num_pos
    for k, i in enumerate(order.tolist()):
        p, r, ipk = float(prec[k]), float(rank[k]), ip[k]
        c = (1.0 - ipk) / (1.0 - p) if ipk > p else 1.0
        w = c / r
        grad[pos_idx[i]] = -(1.0 - ipk) / num_pos
        grad[neg_idx] += step(s_neg - s_pos[i], delta) * w / num_pos
    return torch.tensor(loss, dtype=torch.float64), grad.reshape(scores.shape)


# ------------------------------------------------------------------ Rank & Sort, aLRP

RS_EPS = 1e-10  # Rank & Sort: gate of the ranking (FP) and sorting (den) updates
ALRP_EPS = 1e-5  # aLRP: gate of the classification update (FP)


def _flat64(x):
    return x.detach().reshape(-1).to(torch.float64).cpu()


def _grouped(shape, group_ids, is_pos, single):
    """Mean over the groups (equal ids of group_ids broadcast to shape) that hold a
    positive of single(idx) -> (tuple of 0-dim losses, flat gradient of entries idx);
    each such group's gradient is divided by G, their number. Needs G >= 1."""
    g = group_ids.detach().cpu().to(torch.int64).expand(shape).reshape(-1)
    groups = [torch.nonzero(g == gid).reshape(-1) for gid in torch.unique(g).tolist()]
    groups = [idx for idx in groups if is_pos[idx].any()]
    grad = torch.zeros(g.numel(), dtype=torch.float64)
    parts = []
    for idx in groups:
        losses, grad_g = single(idx)
        grad[idx] = grad_g.reshape(-1) / len(groups)
        parts.append(losses)
    losses = tuple(torch.stack(column).mean() for column in zip(*parts))
    return losses, grad.reshape(shape)


def rank_sort_loss_reference(scores, targets, delta=0.5, group_ids=None):
    """Rank & Sort loss. Returns (loss, ranking, sorting, grad): three float64 0-dim
    tensors (loss = ranking + sorting) and the error-driven gradient (float64, shaped
    like scores).

    targets: y > 0 positive with target y in (0, 1], y == 0 negative, y < 0 ignored.
    For every positive i, with sums over positives k INCLUDING k = i (H(0) = 1/2):

        rank_pos(i) = sum_k H(s_k - s_i),  FP(i) = sum_{j neg} H(s_j - s_i)
        rank_err(i) = FP(i) / (rank_pos(i) + FP(i))
        sort_now(i) = sum_k H(s_k - s_i)(1 - y_k) / rank_pos(i)
        sort_tgt(i) = the same sum over T(i) = {k : y_k >= y_i}, over its own H-sum
        sort_err(i) = sort_now(i) - sort_tgt(i)
        ranking = mean_i rank_err(i),  sorting = mean_i sort_err(i)

    Gradient, accumulated over i, then divided by |P|: if FP(i) > 1e-10,
    g_i -= rank_err(i) and g_j += H(s_j - s_i) / rank(i) for every negative j; with
    M(i) = {k : y_k < y_i} and den(i) = sum_{k in M(i)} H(s_k - s_i), if den(i) > 1e-10,
    g_i -= sort_err(i) and g_k += H(s_k - s_i) sort_err(i) / den(i) for k in M(i).

    group_ids: entries with equal id form separate rankings; every loss is the mean over
    the groups with a positive, each group's gradient its own divided by their number.
    No positive: all zeros."""
    s, y = _flat64(scores), _flat64(targets)
    if (y > 1).any():
        raise ValueError("rank_sort_loss_reference: positive targets must lie in (0, 1]")
    if group_ids is not None and (y > 0).any():

        def single(idx):
            *losses, grad_g = rank_sort_loss_reference(s[idx], y[idx], delta)
            return losses, grad_g

        (loss, ranking, sorting), grad = _grouped(scores.shape, group_ids, y > 0, single)
        return loss, ranking, sorting, grad

    pos, neg = y > 0, y == 0
    sp, yp, sn = s[pos], y[pos], s[neg]
    num_pos = sp.numel()
    grad = torch.zeros_like(s)
    if num_pos == 0:
        zero = torch.zeros((), dtype=torch.float64)
        return zero, zero.clone(), zero.clone(), grad.reshape(scores.shape)
    gp, gn = torch.zeros_like(sp), torch.zeros_like(sn)
    rank_errs, sort_errs = [], []
    for i in range(num_pos):
        hp = step(sp - sp[i], delta)  # over all positives, self term H(0) = 1/2 included
        hn = step(sn - sp[i], delta)
        rank_pos, fp = hp.sum(), hn.sum()
        rank = rank_pos + fp
        rank_err = fp / rank
        in_t = yp >= yp[i]
        sort_now = (hp * (1 - yp)).sum() / rank_pos
        sort_tgt = (hp[in_t] * (1 - yp[in_t])).sum() / hp[in_t].sum()
        sort_err = sort_now - sort_tgt
        rank_errs.append(rank_err)
        sort_errs.append(sort_err)
        if fp > RS_EPS:
            gp[i] -= rank_err
            gn += hn / rank
        below = ~in_t  # M(i): positives with a smaller target
        den = hp[below].sum()
        if den > RS_EPS:
            gp[i] -= sort_err
            gp[below] += hp[below] * sort_err / den
    grad[pos] = gp / num_pos
    grad[neg] = gn / num_pos
    ranking = torch.stack(rank_errs).mean()
    sorting = torch.stack(sort_errs).mean()
    return ranking + sorting, ranking, sorting, grad.reshape(scores.shape)


def alrp_loss_reference(scores, labels, regression_losses, delta=1.0, group_ids=None):
    """aLRP loss. Returns (cls_loss, loc_loss, grad): cls_loss a float64 0-dim tensor,
    grad its error-driven gradient (float64, shaped like scores), loc_loss a float64
    0-dim tensor computed by torch ops from regression_losses (autograd gives
    d loc_loss / d regression_losses; the ranks are constants).

    labels: 1 positive, 0 negative, -1 ignored (or bool). regression_losses: 1-D, one
    value l_k per positive, in the memory order of the positive entries. For every
    positive i, with sums over positives k EXCLUDING k = i:

        rank_pos(i) = 1 + sum_{k != i} H(s_k - s_i),  FP(i) = sum_{j neg} H(s_j - s_i)
        rank(i) = rank_pos(i) + FP(i),  cls_loss = 1 - mean_i rank_pos(i) / rank(i)

    Gradient, divided by |P|: if FP(i) > 1e-5,
    g_i = -(sum_{k != i} H(s_k - s_i) l_k + FP(i)) / rank(i) and every negative j gets
    H(s_j - s_i) (-g_i) / FP(i); otherwise g_i = 0 and i gives nothing to negatives.

    loc_loss = mean_t (sum_{u <= t} l_(u)) / rank_(t) with the positives ordered by
    descending score, ties by descending memory position (the flip of a stable
    ascending sort by score): this library's fixed tie order.

    group_ids: entries with equal id form separate rankings (regression_losses still in
    the memory order of all positives); cls_loss and loc_loss are means over the groups
    with a positive, each group's gradient its own divided by their number. No
    positive: all zeros."""
    s, y = _flat64(scores), labels.detach().reshape(-1).cpu()
    if y.dtype == torch.bool:
        y = y.to(torch.int64)
    pos, neg = y == 1, y == 0
    l64 = regression_losses.to(torch.float64)
    if l64.dim() != 1 or l64.numel() != int(pos.sum()):
        raise ValueError("alrp_loss_reference: regression_losses needs one value per positive")
    if group_ids is not None and pos.any():
        pos_entry = torch.nonzero(pos).reshape(-1)  # flat index of each l_k

        def single(idx):
            l_g = l64[torch.isin(pos_entry, idx).to(l64.device)]
            cls_g, loc_g, grad_g = alrp_loss_reference(s[idx], y[idx], l_g, delta)
            return (cls_g, loc_g), grad_g

        (cls_loss, loc_loss), grad = _grouped(scores.shape, group_ids, pos, single)
        return cls_loss, loc_loss, grad

    sp, sn = s[pos], s[neg]
    num_pos = sp.numel()
    grad = torch.zeros_like(s)
    if num_pos == 0:
        return torch.zeros((), dtype=torch.float64), l64.sum(), grad.reshape(scores.shape)
    lp = l64.detach().cpu()
    gp, gn = torch.zeros_like(sp), torch.zeros_like(sn)
    ranks, precs = [], []
    for i in range(num_pos):
        hp = step(sp - sp[i], delta)
        hp[i] = 0.0  # self term excluded
        hn = step(sn - sp[i], delta)
        rank_pos, fp = 1.0 + hp.sum(), hn.sum()
        rank = rank_pos + fp
        ranks.append(rank)
        precs.append(rank_pos / rank)
        if fp > ALRP_EPS:
            gp[i] = -((hp * lp).sum() + fp) / rank
            gn += hn * (-gp[i]) / fp
    grad[pos] = gp / num_pos
    grad[neg] = gn / num_pos
    cls_loss = 1.0 - torch.stack(precs).mean()
    order = torch.argsort(sp, stable=True).flip(0)  # descending score, ties: later first
    rank = torch.stack(ranks)[order].to(l64.device)
    loc_loss = (torch.cumsum(l64[order.to(l64.device)], 0) / rank).mean()
    return cls_loss, loc_loss, grad.reshape(scores.shape)
