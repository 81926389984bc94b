"""The Rank & Sort and aLRP references against values worked out by hand from their
definitions, their invariants, group composition, and the released-code loops of
benchmarks/baselines.py against the references."""

import os
import sys

import pytest
import torch

from aploss_cuda.reference import alrp_loss_reference, rank_sort_loss_reference

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from baselines import alrp_loop, rank_sort_loop  # noqa: E402

F64 = torch.float64
EXACT = dict(rtol=0.0, atol=1e-12)  # hand values
LOOP = dict(rtol=1e-10, atol=1e-10)  # loops against the references


def t64(*values):
    return torch.tensor(values, dtype=F64)


def close(actual, expected, tol=EXACT):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=F64), **tol)


# ------------------------------------------------------------------ Rank & Sort by hand
# delta = 0.5 throughout, so H(x) = clamp(x + 1/2, 0, 1).

# A (s 1.0, y 0.8), C negative (s 0.9), B (s 0.8, y 0.5), D negative (s 0.0), E ignored (s 5.0).
RS1 = (t64(1.0, 0.9, 0.8, 0.0, 5.0), t64(0.8, 0.0, 0.5, 0.0, -1.0))
# i = A: H(A-A) 0.5, H(B-A) = H(-0.2) = 0.3 -> rank_pos 0.8; H(C-A) = H(-0.1) = 0.4, D 0
#   -> FP 0.4, rank 1.2, rank_err 1/3.
#   sort_now = (0.5 * 0.2 + 0.3 * 0.5) / 0.8 = 0.3125; T(A) = {A}: sort_tgt = 0.1 / 0.5 = 0.2
#   -> sort_err 0.1125; M(A) = {B}, den 0.3: g_A -= 0.1125, g_B += 0.3 * 0.1125 / 0.3.
#   ranking: g_A -= 1/3, g_C += 0.4 / 1.2 = 1/3.
# i = B: H(A-B) = H(0.2) = 0.7, self 0.5 -> rank_pos 1.2; H(C-B) = 0.6 -> FP 0.6, rank 1.8,
#   rank_err 1/3; T(B) = {A, B} = all positives -> sort_err 0; M(B) empty: no sorting update.
#   ranking: g_B -= 1/3, g_C += 0.6 / 1.8 = 1/3.
# ranking = 1/3, sorting = 0.1125 / 2; gradient / |P| = 2:
RS1_RANKING, RS1_SORTING = 1 / 3, 0.1125 / 2
RS1_GRAD = t64(-(1 / 3 + 0.1125) / 2, 1 / 3, (0.1125 - 1 / 3) / 2, 0.0, 0.0)

# A (s 2, y 1), B (s 2, y 0.6): tied scores; C (s 1, y 0.6): tied targets with B;
# D negative (s 1.25), E negative (s -3), F ignored at the tied score 2.
RS2 = (t64(2.0, 2.0, 1.0, 1.25, -3.0, 2.0), t64(1.0, 0.6, 0.6, 0.0, 0.0, -1.0))
# i = A: H(A-A) = H(B-A) = 0.5, H(C-A) = H(-1) = 0 -> rank_pos 1; H(D-A) = H(-0.75) = 0 -> FP 0:
#   rank_err 0 and no ranking update (FP gate).
#   sort_now = (0.5 * 0 + 0.5 * 0.4) / 1 = 0.2; T(A) = {A}: sort_tgt 0 -> sort_err 0.2;
#   M(A) = {B, C}, den = 0.5 + 0: g_A -= 0.2, g_B += 0.5 * 0.2 / 0.5 = 0.2, g_C += 0.
# i = B: same H as A, FP 0; T(B) = {A, B, C} = all -> sort_err 0; M(B) empty.
# i = C: H(A-C) = H(B-C) = 1, self 0.5 -> rank_pos 2.5; H(D-C) = H(0.25) = 0.75 -> FP 0.75,
#   rank 3.25, rank_err 3/13; T(C) = all -> sort_err 0. ranking: g_C -= 3/13, g_D += 3/13.
# ranking = (3/13) / 3 = 1/13, sorting = 0.2 / 3 = 1/15; gradient / 3:
RS2_RANKING, RS2_SORTING = 1 / 13, 1 / 15
RS2_GRAD = t64(-1 / 15, 1 / 15, -1 / 13, 1 / 13, 0.0, 0.0)


def test_rank_sort_hand_fractional():
    loss, ranking, sorting, grad = rank_sort_loss_reference(*RS1, delta=0.5)
    assert loss.dtype == ranking.dtype == sorting.dtype == grad.dtype == F64
    assert loss.dim() == ranking.dim() == sorting.dim() == 0
    close(ranking, RS1_RANKING)
    close(sorting, RS1_SORTING)
    close(loss, RS1_RANKING + RS1_SORTING)
    close(grad, RS1_GRAD)


def test_rank_sort_hand_ties_target_one_and_fp_gate():
    loss, ranking, sorting, grad = rank_sort_loss_reference(*RS2, delta=0.5)
    close(ranking, RS2_RANKING)
    close(sorting, RS2_SORTING)
    close(loss, RS2_RANKING + RS2_SORTING)
    close(grad, RS2_GRAD)


def test_rank_sort_default_delta_and_shape():
    # delta defaults to 0.5; any shape, gradient shaped like scores.
    s, y = RS1[0][:4].reshape(2, 2), RS1[1][:4].reshape(2, 2)
    loss, _, _, grad = rank_sort_loss_reference(s, y)
    close(loss, RS1_RANKING + RS1_SORTING)
    assert grad.shape == (2, 2)
    close(grad.reshape(-1), RS1_GRAD[:4])


def test_rank_sort_eps_gate_of_the_ranking_update():
    # positive at 0, negative at -0.5 + x: FP = H(-0.5 + x) = x. x = 1e-12 <= eps = 1e-10: the
    # ranking error x / (0.5 + x) counts in the loss but no update is made.
    for x, updated in ((1e-12, False), (1e-8, True)):
        loss, ranking, sorting, grad = rank_sort_loss_reference(t64(0.0, -0.5 + x), t64(0.7, 0.0))
        assert sorting.item() == 0.0
        tol = dict(rtol=0.0, atol=1e-15)  # -0.5 + x is rounded: x to about 1e-16
        close(ranking, x / (0.5 + x), tol)
        if updated:  # g_pos = -FP / rank, g_neg = H / rank, |P| = 1
            close(grad, t64(-x / (0.5 + x), x / (0.5 + x)), tol)
        else:
            assert grad.abs().sum().item() == 0.0


def test_rank_sort_no_positive():
    s = torch.randn(7, dtype=F64)
    for y in (torch.zeros(7, dtype=F64), t64(0, -1, 0, -1, 0, 0, -1), -torch.ones(7, dtype=F64)):
        *losses, grad = rank_sort_loss_reference(s, y)
        assert all(v.item() == 0.0 and v.dim() == 0 for v in losses)
        assert grad.abs().sum().item() == 0.0 and grad.shape == s.shape
    *losses, grad = rank_sort_loss_reference(s, y, group_ids=torch.arange(7) % 2)
    assert all(v.item() == 0.0 for v in losses) and grad.abs().sum().item() == 0.0


def test_rank_sort_rejects_target_above_one():
    with pytest.raises(ValueError):
        rank_sort_loss_reference(t64(0.0, 1.0), t64(1.5, 0.0))


def random_problem(n, seed, *, ties=False, p_pos=0.15, p_ignore=0.1):
    """(scores, targets, labels) float64: targets > 0 continuous (on a coarse grid with
    ties, then also the scores are on a 0.25 grid), labels 1 / 0 / -1 from the same split."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=F64)
    u = torch.rand(n, generator=g, dtype=F64)
    y = 1.0 - torch.rand(n, generator=g, dtype=F64)  # (0, 1]
    if ties:
        scores = torch.round(scores * 4) / 4
        y = torch.randint(1, 5, (n,), generator=g).to(F64) / 4  # 0.25 .. 1
    labels = torch.where(u < p_pos, 1, torch.where(u > 1 - p_ignore, -1, 0))
    targets = torch.where(labels == 1, y, labels.to(F64))
    return scores, targets, labels


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ties", [False, True])
def test_rank_sort_invariants(seed, ties):
    s, y, _ = random_problem(120, seed, ties=ties)
    neg, pos = y == 0, y > 0
    loss, ranking, sorting, grad = rank_sort_loss_reference(s, y)
    close(loss, ranking.item() + sorting.item())
    # every update is zero-sum: the ranking one between i and the negatives, the sorting one
    # between i and M(i); so negatives sum to the ranking loss (no FP lies in (0, eps]).
    close(grad.sum(), 0.0)
    close(grad[neg].sum(), ranking.item())
    close(grad[pos].sum(), -ranking.item())
    assert grad[y < 0].abs().sum().item() == 0.0
    # all targets equal: T(i) = P, so sort_tgt = sort_now, and M(i) is empty.
    _, _, sorting_1, grad_1 = rank_sort_loss_reference(s, torch.where(pos, 1.0, y))
    assert sorting_1.item() == 0.0  # every (1 - y) is exactly 0
    _, ranking_c, sorting_c, grad_c = rank_sort_loss_reference(s, torch.where(pos, 0.7, y))
    close(sorting_c, 0.0)
    close(ranking_c, ranking.item())
    close(grad_c, grad_1)
    # only the rank errors remain: g_i = -FP(i) / rank(i) / |P| (self term in rank_pos)
    sp, sn = s[pos], s[neg]
    h = lambda x: (x + 0.5).clamp(0, 1)  # noqa: E731
    fp = h(sn[None, :] - sp[:, None]).sum(1)
    rank = h(sp[None, :] - sp[:, None]).sum(1) + fp
    close(grad_1[pos], -(fp / rank) / pos.sum())


def test_rank_sort_perfectly_sorted_has_no_sorting_error():
    # positives 2 apart (> delta): H is 0 or 1 between them apart from the self term.
    s = t64(0.0, 2.0, 4.0, 6.0, 3.0)
    y = t64(0.2, 0.4, 0.6, 0.8, 0.0)
    _, _, sorting, grad = rank_sort_loss_reference(s, y)
    close(sorting, 0.0)
    # reversed targets (y 0.8, 0.6, 0.4, 0.2 at s 0, 2, 4, 6); only the self term and the
    # positives above i have H > 0 (H = 1 for those):
    # i = s 0: sort_now = (0.5 * 0.2 + 0.4 + 0.6 + 0.8) / 3.5 = 1.9 / 3.5; T = {i}: sort_tgt 0.2.
    # i = s 2: (0.5 * 0.4 + 0.6 + 0.8) / 2.5 = 1.6 / 2.5; T = {s 0 (H 0), i}: sort_tgt 0.4.
    # i = s 4: (0.5 * 0.6 + 0.8) / 1.5 = 1.1 / 1.5; sort_tgt 0.6.  i = s 6: 0.8 - 0.8 = 0.
    _, _, sorting, _ = rank_sort_loss_reference(s, t64(0.8, 0.6, 0.4, 0.2, 0.0))
    close(sorting, (1.9 / 3.5 - 0.2 + 1.6 / 2.5 - 0.4 + 1.1 / 1.5 - 0.6) / 4)


# ------------------------------------------------------------------------- aLRP by hand
# delta = 1 throughout, so H(x) = clamp(x / 2 + 1/2, 0, 1).

# memory: A pos (s 1, l 0.3), C neg (s 0.5), B pos (s 0, l 0.6), D neg (s -2), E ignored (s 3).
ALRP1 = (t64(1.0, 0.5, 0.0, -2.0, 3.0), torch.tensor([1, 0, 1, 0, -1]), t64(0.3, 0.6))
# i = A: H(B-A) = H(-1) = 0 -> rank_pos 1; H(C-A) = H(-0.5) = 0.25, D 0 -> FP 0.25, rank 1.25,
#   prec 0.8; g_A = -(0 * 0.6 + 0.25) / 1.25 = -0.2; C += 0.25 * 0.2 / 0.25 = 0.2.
# i = B: H(A-B) = H(1) = 1 -> rank_pos 2; H(C-B) = H(0.5) = 0.75 -> FP 0.75, rank 2.75,
#   prec 8/11; g_B = -(1 * 0.3 + 0.75) / 2.75 = -21/55; C += 0.75 * (21/55) / 0.75 = 21/55.
# cls = 1 - (0.8 + 8/11) / 2 = 13/55; gradient / 2.
# loc: order A (rank 1.25), B (rank 2.75): (0.3 / 1.25 + 0.9 / 2.75) / 2 = 78/275;
#   d/dl_A = (1/1.25 + 1/2.75) / 2 = 32/55, d/dl_B = (1/2.75) / 2 = 2/11.
ALRP1_CLS, ALRP1_LOC = 13 / 55, 78 / 275
ALRP1_GRAD = t64(-0.1, (0.2 + 21 / 55) / 2, -21 / 110, 0.0, 0.0)
ALRP1_LGRAD = t64(32 / 55, 2 / 11)

# memory: A pos (s 2, l 0.5), B pos (s 2, l 0.2) tied with A, D neg (s 1), C pos (s 0, l 0.4),
# E neg (s -5); bool labels.
ALRP2 = (t64(2.0, 2.0, 1.0, 0.0, -5.0), torch.tensor([True, True, False, True, False]), t64(0.5, 0.2, 0.4))
# i = A: H(B-A) = H(0) = 0.5, H(C-A) = H(-2) = 0 -> rank_pos 1.5; H(D-A) = H(-1) = 0 -> FP 0:
#   prec 1, rank 1.5, gradient 0 (FP gate). i = B: the same.
# i = C: H(A-C) = H(B-C) = H(2) = 1 -> rank_pos 3; H(D-C) = H(1) = 1, E 0 -> FP 1, rank 4,
#   prec 0.75; g_C = -(0.5 + 0.2 + 1) / 4 = -0.425; D += 1 * 0.425 / 1.
# cls = 1 - (1 + 1 + 0.75) / 3 = 1/12; gradient / 3.
# loc: descending score, ties by descending memory position: B, A, C with ranks 1.5, 1.5, 4:
#   (0.2 / 1.5 + 0.7 / 1.5 + 1.1 / 4) / 3 = 7/24;
#   d/dl_B = (2 / 1.5 + 1/4) / 3 = 19/36, d/dl_A = (1 / 1.5 + 1/4) / 3 = 11/36, d/dl_C = 1/12.
#   (A before B would give (0.5 / 1.5 + 0.7 / 1.5 + 1.1 / 4) / 3 and swap 19/36 and 11/36.)
ALRP2_CLS, ALRP2_LOC = 1 / 12, 7 / 24
ALRP2_GRAD = t64(0.0, 0.0, 0.425 / 3, -0.425 / 3, 0.0)
ALRP2_LGRAD = t64(11 / 36, 19 / 36, 1 / 12)


def alrp_with_lgrad(scores, labels, l, **kwargs):
    l = l.clone().requires_grad_(True)
    cls_loss, loc_loss, grad = alrp_loss_reference(scores, labels, l, **kwargs)
    loc_loss.backward()
    return cls_loss, loc_loss.detach(), grad, l.grad


@pytest.mark.parametrize(
    "case, cls, loc, grad, lgrad",
    [
        (ALRP1, ALRP1_CLS, ALRP1_LOC, ALRP1_GRAD, ALRP1_LGRAD),
        (ALRP2, ALRP2_CLS, ALRP2_LOC, ALRP2_GRAD, ALRP2_LGRAD),
    ],
    ids=["fractional", "ties-fp-gate-bool"],
)
def test_alrp_hand(case, cls, loc, grad, lgrad):
    cls_loss, loc_loss, g, lg = alrp_with_lgrad(*case, delta=1.0)
    assert cls_loss.dtype == loc_loss.dtype == g.dtype == F64 and cls_loss.dim() == loc_loss.dim() == 0
    close(cls_loss, cls)
    close(loc_loss, loc)
    close(g, grad)
    close(lg, lgrad)
    # defaults: delta 1; the regression losses get no gradient through cls_loss.
    l = case[2].clone().requires_grad_(True)
    cls_loss, _, _ = alrp_loss_reference(case[0], case[1], l)
    assert not cls_loss.requires_grad
    close(cls_loss, cls)


def test_alrp_eps_gate():
    # positive at 0, negative at -1 + 2x: FP = H(-1 + 2x) = x (delta 1). x = 1e-6 <= 1e-5: the
    # precision 1 / (1 + x) counts in the loss, but the gradient is 0 (Rank & Sort's 1e-10 gate
    # would update).
    s, x = t64(0.0, -1.0 + 2e-6), 1e-6
    cls_loss, _, grad = alrp_loss_reference(s, torch.tensor([1, 0]), t64(0.3))
    close(cls_loss, 1 - 1 / (1 + x), dict(rtol=1e-6, atol=0.0))
    assert grad.abs().sum().item() == 0.0
    _, _, _, grad_rs = rank_sort_loss_reference(s * 0.5, t64(1.0, 0.0))  # same H at delta 0.5
    assert grad_rs[1].item() > 0.0
    # x = 1e-4 > eps: g_pos = -(0 + x) / (1 + x), g_neg = x / (1 + x).
    _, _, grad = alrp_loss_reference(t64(0.0, -1.0 + 2e-4), torch.tensor([1, 0]), t64(0.3))
    close(grad, t64(-1e-4 / (1 + 1e-4), 1e-4 / (1 + 1e-4)), dict(rtol=1e-6, atol=0.0))


def test_alrp_no_positive():
    s = torch.randn(6, dtype=F64)
    l = torch.zeros(0, dtype=F64, requires_grad=True)
    cls_loss, loc_loss, grad = alrp_loss_reference(s, torch.tensor([0, -1, 0, 0, -1, 0]), l)
    assert cls_loss.item() == 0.0 and loc_loss.item() == 0.0 and loc_loss.dim() == 0
    assert isinstance(loc_loss, torch.Tensor) and grad.abs().sum().item() == 0.0
    loc_loss.backward()  # still a graph to the (empty) regression losses
    cls_loss, loc_loss, grad = alrp_loss_reference(s, torch.zeros(6, dtype=torch.bool), t64())
    assert cls_loss.item() == 0.0 and loc_loss.item() == 0.0 and grad.abs().sum().item() == 0.0


def test_alrp_rejects_wrong_number_of_regression_losses():
    with pytest.raises(ValueError):
        alrp_loss_reference(*ALRP1[:2], t64(0.3))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ties", [False, True])
def test_alrp_invariants(seed, ties):
    s, _, labels = random_problem(120, seed, ties=ties)
    pos, neg = labels == 1, labels == 0
    l = torch.rand(int(pos.sum()), generator=torch.Generator().manual_seed(seed), dtype=F64)
    cls_loss, loc_loss, grad = alrp_loss_reference(s, labels, l)
    # every positive's update is zero-sum with the negatives: -g_i is spread over them.
    close(grad.sum(), 0.0)
    assert grad[labels == -1].abs().sum().item() == 0.0
    assert (grad[pos] <= 0).all() and (grad[neg] >= 0).all()
    assert 0.0 <= cls_loss.item() < 1.0 and loc_loss.item() >= 0.0
    # with all l = 0 the loc loss is 0 and g_i = -FP(i) / rank(i) / |P| = -(1 - prec(i)) / |P|
    # (where FP(i) > eps; no FP lies in (0, eps] here): negatives sum to cls_loss.
    cls0, loc0, grad0 = alrp_loss_reference(s, labels, torch.zeros_like(l))
    close(cls0, cls_loss.item())
    close(loc0, 0.0)
    close(grad0[neg].sum(), cls0.item())
    close(grad0[pos].sum(), -cls0.item())


# ------------------------------------------------------------------------------ groups


def interleave(ids, seed):
    """A random permutation of the entries that keeps each group's entries in their order
    (the order of tied positives fixes aLRP's loc_loss)."""
    keys = torch.rand(ids.numel(), generator=torch.Generator().manual_seed(seed), dtype=F64)
    for gid in torch.unique(ids).tolist():
        keys[ids == gid] = keys[ids == gid].sort().values
    return torch.argsort(keys)


def test_groups_hand():
    # Three groups in one interleaved tensor: RS1 (id 7), RS2 (id 3), one with no positive
    # (id 5, not counted). Loss = mean of the two hand values, gradient = hand gradient / 2.
    s = torch.cat([RS1[0], RS2[0], t64(9.0, 0.1, 1.0)])
    y = torch.cat([RS1[1], RS2[1], t64(0.0, 0.0, -1.0)])
    ids = torch.tensor([7] * 5 + [3] * 6 + [5] * 3)
    expected = torch.cat([RS1_GRAD, RS2_GRAD, t64(0, 0, 0)]) / 2
    perm = interleave(ids, 0)
    loss, ranking, sorting, grad = rank_sort_loss_reference(s[perm], y[perm], group_ids=ids[perm])
    close(ranking, (RS1_RANKING + RS2_RANKING) / 2)
    close(sorting, (RS1_SORTING + RS2_SORTING) / 2)
    close(loss, (RS1_RANKING + RS1_SORTING + RS2_RANKING + RS2_SORTING) / 2)
    close(grad, expected[perm])

    # aLRP: ALRP1 (id 1), ALRP2 (id 0), no-positive group (id 2); regression losses in the
    # memory order of all positives after the permutation.
    s = torch.cat([ALRP1[0], ALRP2[0], t64(9.0, -1.0)])
    labels = torch.cat([ALRP1[1], ALRP2[1].long(), torch.tensor([0, -1])])
    ids = torch.tensor([1] * 5 + [0] * 5 + [2] * 2)
    l_entry = torch.zeros(12, dtype=F64)  # l of each positive entry, at the entry
    l_entry[labels == 1] = torch.cat([ALRP1[2], ALRP2[2]])
    lg_entry = torch.zeros(12, dtype=F64)
    lg_entry[labels == 1] = torch.cat([ALRP1_LGRAD, ALRP2_LGRAD]) / 2
    perm = interleave(ids, 1)
    labels_p = labels[perm]
    cls_loss, loc_loss, grad, lgrad = alrp_with_lgrad(
        s[perm], labels_p, l_entry[perm][labels_p == 1], group_ids=ids[perm]
    )
    close(cls_loss, (ALRP1_CLS + ALRP2_CLS) / 2)
    close(loc_loss, (ALRP1_LOC + ALRP2_LOC) / 2)
    close(grad, (torch.cat([ALRP1_GRAD, ALRP2_GRAD, t64(0, 0)]) / 2)[perm])
    close(lgrad, lg_entry[perm][labels_p == 1])


def group_layouts(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "interleaved": torch.randint(0, 5, shape, generator=g),
        "broadcast-rows": (torch.arange(shape[0]) * 1000 + 3)[:, None],
        "one-group": torch.zeros((), dtype=torch.int64),
    }


@pytest.mark.parametrize("layout", ["interleaved", "broadcast-rows", "one-group"])
@pytest.mark.parametrize("ties", [False, True])
def test_groups_compose(layout, ties):
    shape = (6, 40)
    s, y, labels = (x.reshape(shape) for x in random_problem(240, 11, ties=ties, p_pos=0.05))
    ids = group_layouts(shape, 3)[layout]
    flat_ids = ids.expand(shape).reshape(-1)
    s_f, y_f, lab_f = s.reshape(-1), y.reshape(-1), labels.reshape(-1)
    l_all = torch.rand(int((labels == 1).sum()), generator=torch.Generator().manual_seed(5), dtype=F64)
    l_entry = torch.zeros(240, dtype=F64)
    l_entry[lab_f == 1] = l_all

    rs_parts, al_parts = [], []
    rs_grad, al_grad, al_lgrad = (torch.zeros(240, dtype=F64) for _ in range(3))
    for gid in torch.unique(flat_ids).tolist():
        idx = torch.nonzero(flat_ids == gid).reshape(-1)
        if (lab_f[idx] == 1).any():
            *losses, grad_g = rank_sort_loss_reference(s_f[idx], y_f[idx])
            rs_parts.append(torch.stack(losses))
            rs_grad[idx] = grad_g
            lab_g = lab_f[idx]
            cls_g, loc_g, grad_g, lgrad_g = alrp_with_lgrad(s_f[idx], lab_g, l_entry[idx][lab_g == 1])
            al_parts.append(torch.stack([cls_g, loc_g]))
            al_grad[idx] = grad_g
            al_lgrad[idx[lab_g == 1]] = lgrad_g
    num = len(rs_parts)
    assert num >= (2 if layout != "one-group" else 1)

    *losses, grad = rank_sort_loss_reference(s, y, group_ids=ids)
    close(torch.stack(losses), torch.stack(rs_parts).mean(0))
    close(grad, (rs_grad / num).reshape(shape))
    cls_loss, loc_loss, grad, lgrad = alrp_with_lgrad(s, labels, l_all, group_ids=ids)
    close(torch.stack([cls_loss, loc_loss]), torch.stack(al_parts).mean(0))
    close(grad, (al_grad / num).reshape(shape))
    close(lgrad, al_lgrad[lab_f == 1] / num)
    if layout == "one-group":  # one group = no groups
        close(torch.stack(losses), torch.stack(rank_sort_loss_reference(s, y)[:3]))
        close(cls_loss, alrp_loss_reference(s, labels, l_all)[0])


# --------------------------------------------------------------- released-code loops


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ties", [False, True])
def test_rank_sort_loop_matches_reference(seed, ties):
    s, y, _ = random_problem(300, seed, ties=ties, p_pos=0.1)
    s = s.reshape(20, 15).requires_grad_(True)
    y = y.reshape(20, 15)
    for delta in (0.5, 1.0):
        loss = rank_sort_loop(s, y, delta=delta)
        (grad,) = torch.autograd.grad(loss, s)
        ref_loss, _, _, ref_grad = rank_sort_loss_reference(s, y, delta=delta)
        assert loss.dtype == F64 and loss.dim() == 0
        close(loss.detach(), ref_loss, LOOP)
        close(grad, ref_grad, LOOP)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ties", [False, True])
def test_alrp_loop_matches_reference(seed, ties):
    s, _, labels = random_problem(300, seed, ties=ties, p_pos=0.1)
    s = s.reshape(15, 20).requires_grad_(True)
    labels = labels.reshape(15, 20)
    l = torch.rand(int((labels == 1).sum()), generator=torch.Generator().manual_seed(seed), dtype=F64)
    if ties:  # tied regression losses too, and tied positives with different l
        l = torch.round(l * 4) / 4
    for delta in (1.0, 0.5):
        l_loop = l.clone().requires_grad_(True)
        cls_loss, loc_loss = alrp_loop(s, labels, l_loop, delta=delta)
        (grad,) = torch.autograd.grad(cls_loss, s)
        (lgrad,) = torch.autograd.grad(loc_loss, l_loop)
        ref_cls, ref_loc, ref_grad, ref_lgrad = alrp_with_lgrad(s, labels, l, delta=delta)
        close(cls_loss.detach(), ref_cls, LOOP)
        close(loc_loss.detach(), ref_loc, LOOP)
        close(grad, ref_grad, LOOP)
        close(lgrad, ref_lgrad, LOOP)


def test_loops_hand_cases_and_edge_cases():
    s = RS2[0].clone().requires_grad_(True)
    loss = rank_sort_loop(s, RS2[1])
    loss.backward()
    close(loss.detach(), RS2_RANKING + RS2_SORTING)
    close(s.grad, RS2_GRAD)
    s = ALRP2[0].clone().requires_grad_(True)
    l = ALRP2[2].clone().requires_grad_(True)
    cls_loss, loc_loss = alrp_loop(s, ALRP2[1], l)
    (cls_loss + loc_loss).backward()
    close(cls_loss.detach(), ALRP2_CLS)
    close(loc_loss.detach(), ALRP2_LOC)
    close(s.grad, ALRP2_GRAD)
    close(l.grad, ALRP2_LGRAD)
    # no positive: zero losses, zero gradients
    s = torch.randn(5, dtype=F64, requires_grad=True)
    loss = rank_sort_loop(s, t64(0, -1, 0, 0, -1))
    loss.backward()
    assert loss.item() == 0.0 and s.grad.abs().sum().item() == 0.0
    s.grad = None
    l = torch.zeros(0, dtype=F64, requires_grad=True)
    cls_loss, loc_loss = alrp_loop(s, torch.tensor([0, -1, 0, 0, -1]), l)
    (cls_loss + loc_loss).backward()
    assert cls_loss.item() == 0.0 and loc_loss.item() == 0.0 and s.grad.abs().sum().item() == 0.0
    # computed in scores' dtype
    s32 = RS1[0].float().requires_grad_(True)
    assert rank_sort_loop(s32, RS1[1].float()).dtype == torch.float32
    cls_loss, loc_loss = alrp_loop(ALRP1[0].float(), ALRP1[1], ALRP1[2].float())
    assert cls_loss.dtype == loc_loss.dtype == torch.float32
