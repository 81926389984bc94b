"""Pure-PyTorch reference of AP-loss and its error-driven gradient (Chen et al., TPAMI
2020): a direct transcription of the definitions, in float64, looping over positives in ascending score order. It is the
ground truth of the tests; keep it obviously correct, not fast (O(P * N))."""

import torch


def step(x, delta):
    """H(x) = clamp(x / (2 delta) + 1/2, 0, 1)."""
    return (x / (2 * delta) + 0.5).clamp(0.0, 1.0)


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
