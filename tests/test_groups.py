"""ap_loss with group_ids on the CPU: the layouts, id dtypes and values, views, edge cases
and errors of grouped rankings, against a Python loop of single-ranking reference calls.
(The properties every loss, device and grouping share are tables in tests/test_devices.py,
tests/test_opcheck.py and tests/test_properties.py.)

Spec: entries with the same id form one ranking; the loss is the mean, over the groups
with at least one positive, of that group's AP-loss; an entry's gradient is its group's
single-ranking gradient divided by G, the number of such groups; groups without a
positive get zero gradient; no such group at all: loss 0 and zero gradient.
"""

import contextlib

import losses
import operators
import pytest
import torch
from devices import EMULATED
from groupings import BIG, HUGE
from helpers import TOLERANCE, loss_and_grad, random_problem, scalar_path
from losses import ap_grouped_reference

import aploss_cuda


# ---------------------------------------------------------------------------------- helpers


def assert_grouped_matches(scores, labels, group_ids, *, delta=1.0, interpolate=True, tol=None):
    """Our grouped loss and gradient against the reference loop; returns ours and the
    reference's per-group data."""
    loss, grad = loss_and_grad(
        scores, labels, group_ids=group_ids, delta=delta, interpolate=interpolate
    )
    ref_loss, ref_grad, per_group = ap_grouped_reference(scores, labels, group_ids, delta, interpolate)
    tol = tol or TOLERANCE[scores.dtype]
    assert loss.dtype == scores.dtype and loss.dim() == 0
    assert grad.dtype == scores.dtype and grad.shape == scores.shape
    torch.testing.assert_close(loss.double(), ref_loss, **tol)
    scale = ref_grad.abs().max().item() if ref_grad.numel() else 0.0
    torch.testing.assert_close(
        grad.double(), ref_grad, rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * scale
    )
    return loss, grad, per_group


def image_class_problem(seed, B=4, A=30, C=5, **kwargs):
    kwargs.setdefault("p_pos", 0.1)
    return random_problem((B, A, C), seed=seed, **kwargs)


def full_ids(shape, num_groups, seed, scale=1, offset=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_groups, shape, generator=g) * scale + offset


B, A, C = 4, 30, 5
LAYOUTS = {
    "per-image": lambda: torch.arange(B)[:, None, None],
    "per-class": lambda: torch.arange(C),
    "per-image-class": lambda: (torch.arange(B)[:, None, None] * C + torch.arange(C)),
    "per-anchor": lambda: torch.arange(A)[:, None],
    "merged-images": lambda: torch.tensor([3, 3, 0, 7])[:, None, None],  # images 0 and 1 share
    "class-big-ids": lambda: torch.tensor([5, 0, 2, 9, 4]) * BIG,  # non-direct codes
    "image-huge-ids": lambda: torch.tensor([HUGE + 17, 3, HUGE, 2**62])[:, None, None],
    "full-size": lambda: full_ids((B, A, C), 7, seed=1),
    "full-size-sparse": lambda: full_ids((B, A, C), 6, seed=2, scale=9973),  # direct, gaps
    "full-size-huge": lambda: full_ids((B, A, C), 9, seed=3, scale=HUGE, offset=11),
    "scalar": lambda: torch.tensor(4),
    "leading-one": lambda: torch.arange(C)[None, None, :] % 2,
}


# ---------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("delta", [0.25, 1.0, 3.0])
def test_layouts(layout, interpolate, delta):
    seed = sorted(LAYOUTS).index(layout)
    scores, labels = image_class_problem(seed, dtype=torch.float64, ties=seed % 3 == 0)
    assert_grouped_matches(scores, labels, LAYOUTS[layout](), delta=delta, interpolate=interpolate)


@pytest.mark.parametrize("id_dtype", [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8])
def test_group_id_dtypes(id_dtype):
    scores, labels = image_class_problem(22, dtype=torch.float64)
    ids = torch.tensor([3, 0, 100, 7])[:, None, None]
    loss, grad, _ = assert_grouped_matches(scores, labels, ids.to(id_dtype))
    expected, expected_grad = loss_and_grad(scores, labels, group_ids=ids)
    assert loss.item() == expected.item() and torch.equal(grad, expected_grad)


def test_non_contiguous_scores_with_broadcast_ids():
    g = torch.Generator().manual_seed(23)
    base = torch.randn(6, 8, 5, 7, generator=g, dtype=torch.float64)  # (B, C, H, W)
    base_labels = (torch.rand(6, 8, 5, 7, generator=g) < 0.1).long()
    base_labels[torch.rand(6, 8, 5, 7, generator=g) < 0.1] = -1
    per_image = torch.arange(6)[:, None, None, None]
    per_class = torch.arange(8)[:, None, None]
    views = {
        "channels-last": (lambda t: t.contiguous(memory_format=torch.channels_last), per_class),
        "transposed": (lambda t: t.transpose(1, 3), torch.arange(7)[:, None, None]),  # (B, W, H, C)
        "permuted": (lambda t: t.permute(0, 2, 3, 1), torch.arange(8)),  # (B, H, W, C)
        "sliced": (lambda t: t[:, 1::2, :, ::3], per_image),
        "expanded": (lambda t: t[:, :, :1, :].expand(6, 8, 4, 7), per_class),
    }
    for name, (view, ids) in views.items():
        scores, labels = view(base), view(base_labels)
        if name == "channels-last":
            labels = labels.contiguous()  # labels in the default layout, scores channels-last
        loss, grad, _ = assert_grouped_matches(scores, labels, ids)
        expected, expected_grad = loss_and_grad(
            scores.contiguous(), labels.contiguous(), group_ids=ids
        )
        # the same ranking in another memory order: equal up to summation order
        torch.testing.assert_close(loss, expected, rtol=1e-13, atol=1e-15, msg=name)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-15, msg=name)
        assert grad.shape == scores.shape


def test_non_contiguous_full_size_ids():
    scores, labels = image_class_problem(24, dtype=torch.float64)
    ids_t = full_ids((C, A, B), 6, seed=5).permute(2, 1, 0)  # (B, A, C), not contiguous
    assert_grouped_matches(scores, labels, ids_t)
    assert_grouped_matches(scores, labels, ids_t * BIG)
    # a full-size id tensor broadcast along one dimension (stride 0)
    assert_grouped_matches(scores, labels, full_ids((B, 1, C), 6, seed=6).expand(B, A, C) * BIG)


@pytest.mark.parametrize("interpolate", [True, False])
def test_ties_within_and_across_groups(interpolate):
    g = torch.Generator().manual_seed(25)
    scores = torch.randint(-3, 4, (8, 40), generator=g).double() * 0.5  # delta-grid ties
    labels = (torch.rand(8, 40, generator=g) < 0.25).long()
    labels[torch.rand(8, 40, generator=g) < 0.1] = -1
    for ids in (torch.arange(8)[:, None] % 3, torch.arange(40) % 4, full_ids((8, 40), 5, seed=7)):
        for delta in (0.5, 1.0, 2.0):
            assert_grouped_matches(scores, labels, ids, delta=delta, interpolate=interpolate)
    # every score equal
    zeros = torch.zeros(8, 40, dtype=torch.float64)
    assert_grouped_matches(zeros, labels, torch.arange(8)[:, None], interpolate=interpolate)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_large_scores_groups_far_apart(dtype):
    # Groups at wildly different scales must not see each other's positives.
    g = torch.Generator().manual_seed(26)
    scores = torch.randn(5, 60, generator=g, dtype=torch.float64)
    scores[1] = 1e30 * (1 + 1e-3 * torch.arange(60, dtype=torch.float64))  # > delta apart
    scores[2] = -1e30 * (1 + 1e-3 * torch.randperm(60, generator=g).double())
    scores[3] += 1e30  # rounds to exactly 1e30 in float64 / float32: all tied
    scores[4] *= 1e-30  # all within delta of each other
    labels = (torch.rand(5, 60, generator=g) < 0.2).long()
    labels[:, 0] = 1
    labels[:, 1] = 0
    ids = torch.tensor([4, 0, 3, 1, 2])[:, None]
    scores = scores.to(dtype)
    assert_grouped_matches(scores, labels, ids)
    assert_grouped_matches(scores, labels, ids, delta=0.5, interpolate=False)
    # the same five rankings each run alone
    loss, grad = loss_and_grad(scores, labels, group_ids=ids)
    losses = [loss_and_grad(scores[i], labels[i])[0].double().item() for i in range(5)]
    assert loss.double().item() == pytest.approx(sum(losses) / 5, rel=TOLERANCE[dtype]["rtol"])
    for i in range(5):
        _, grad_i = loss_and_grad(scores[i], labels[i])
        torch.testing.assert_close(grad[i] * 5, grad_i, **TOLERANCE[dtype])


# ------------------------------------------------------------------------ edge cases


def test_zero_dim():
    for label, expected_loss in ((1, 0.0), (0, 0.0), (-1, 0.0)):
        loss, grad = loss_and_grad(
            torch.tensor(0.3), torch.tensor(label), group_ids=torch.tensor(5)
        )
        assert loss.item() == expected_loss and grad.shape == () and grad.item() == 0.0
    loss, grad = loss_and_grad(torch.tensor(0.3), torch.tensor(1), group_ids=torch.tensor(HUGE))
    assert loss.item() == 0.0 and grad.shape == ()
    # a 0-dim id broadcast over a whole tensor is one group: the ungrouped loss
    scores, labels = image_class_problem(28, dtype=torch.float64)
    for gid in (torch.tensor(0), torch.tensor(HUGE, dtype=torch.int64)):
        assert_grouped_matches(scores, labels, gid)


@pytest.mark.parametrize(
    "shape,ids",
    [
        ((0,), torch.zeros(0, dtype=torch.int64)),
        ((0,), torch.tensor([3])),
        ((0,), torch.tensor(3)),
        ((5, 0, 3), torch.arange(5)[:, None, None]),
        ((5, 0, 3), torch.arange(3) * BIG),
        ((5, 0, 3), torch.zeros(0, 3, dtype=torch.int64)),
        ((0, 4), torch.arange(4)),
    ],
)
def test_empty(shape, ids):
    scores = torch.randn(shape, dtype=torch.float32)
    labels = torch.ones(shape, dtype=torch.int64)
    loss, grad = loss_and_grad(scores, labels, group_ids=ids)
    assert loss.item() == 0.0 and loss.dtype == torch.float32 and loss.dim() == 0
    assert grad.shape == scores.shape and grad.dtype == torch.float32


def test_groups_without_positives_get_zero_gradient():
    scores, labels = image_class_problem(29, dtype=torch.float64, p_pos=0.1, p_ignore=0.1)
    ids = LAYOUTS["per-image-class"]()  # 20 groups
    labels = labels.clone()
    labels[:, 0, :] = 1  # every group has a positive, but for the eight below
    labels[0, :, 1][labels[0, :, 1] == 1] = 0  # negatives and ignored only
    labels[1, :, 2] = 0  # negatives only
    labels[2, :, 3] = -1  # ignored only
    labels[3] = 0  # a whole image without positives: five groups
    labels[2, :, 0] = 1  # positives only: loss 0, but it counts in G
    loss, grad, per_group = assert_grouped_matches(scores, labels, ids)
    assert len(per_group) == 20 - 8
    full = ids.expand(B, A, C)
    for gid in ((0 * C + 1), (1 * C + 2), (2 * C + 3)) + tuple(3 * C + c for c in range(C)):
        assert gid not in per_group
        assert grad[full == gid].abs().sum().item() == 0.0
    # positives only: loss 0 and gradient 0, to rounding (the segmented prefix sums of
    # the other groups leave residuals of ~1e-18 here)
    assert per_group[2 * C + 0][1] == 0.0
    assert grad[full == 2 * C].abs().max().item() <= 1e-15
    # the mean is over the 12 groups with a positive, the positives-only one included
    losses = [v[1] for v in per_group.values()]
    assert loss.item() == pytest.approx(sum(losses) / 12, rel=1e-12)


def test_positives_only_group_counts_in_the_mean():
    scores = torch.tensor([0.3, 0.5, 0.1, 0.9, 0.2], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 1, 1])
    single, single_grad = loss_and_grad(scores[:3], labels[:3])
    assert single.item() > 0
    loss, grad = loss_and_grad(scores, labels, group_ids=torch.tensor([0, 0, 0, 1, 1]))
    assert loss.item() == pytest.approx(single.item() / 2, rel=1e-15)
    torch.testing.assert_close(grad[:3], single_grad / 2, rtol=1e-15, atol=0)
    assert grad[3:].abs().sum().item() == 0.0


@pytest.mark.parametrize("n", [5, 140, 1000])
def test_group_without_negatives_has_zero_loss(n):
    # Every entry positive: each group's AP is exactly 1 and its gradient exactly 0; the
    # ungrouped kernel returns exactly 0, the grouped one must not return -2e-16.
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * 0.3
    labels = torch.ones(n, dtype=torch.int64)
    expected, expected_grad = loss_and_grad(scores, labels)
    assert expected.item() == 0.0 and expected_grad.abs().max().item() == 0.0
    wrong = []
    for name, ids in [("one group", torch.tensor(3)), ("one group, huge id", torch.tensor(HUGE)),
                      ("two groups", torch.arange(n) % 2)]:
        for delta, interpolate in ((1.0, True), (0.1, False)):
            loss, grad = loss_and_grad(scores, labels, group_ids=ids, delta=delta, interpolate=interpolate)
            assert grad.abs().max().item() == 0.0
            if loss.item() != 0.0:
                wrong.append(f"{name}, delta={delta}, interpolate={interpolate}: loss {loss.item():.3g}")
    assert not wrong, "; ".join(wrong)


def test_duplicated_group_halves_the_gradient():
    scores, labels = random_problem((300,), seed=30, dtype=torch.float64, p_pos=0.1)
    single, single_grad = loss_and_grad(scores, labels)
    ids = torch.arange(2).repeat_interleave(300)
    loss, grad = loss_and_grad(scores.repeat(2), labels.repeat(2), group_ids=ids)
    torch.testing.assert_close(loss, single, rtol=1e-14, atol=0)
    torch.testing.assert_close(grad, single_grad.repeat(2) / 2, rtol=1e-13, atol=1e-18)


@pytest.mark.parametrize("name", ["all negative", "all ignored", "negatives and ignored"])
def test_no_group_with_a_positive(name):
    scores = torch.randn(4, 30, 5, generator=torch.Generator().manual_seed(31))
    labels = {
        "all negative": torch.zeros(4, 30, 5, dtype=torch.int64),
        "all ignored": torch.full((4, 30, 5), -1),
        "negatives and ignored": (torch.arange(600).reshape(4, 30, 5) % 3 == 0).long() - 1,
    }[name]
    for ids in (LAYOUTS["per-image"](), LAYOUTS["class-big-ids"](), LAYOUTS["full-size-huge"]()):
        loss, grad = loss_and_grad(scores, labels, group_ids=ids)
        assert loss.item() == 0.0 and grad.abs().sum().item() == 0.0
        assert grad.shape == scores.shape and grad.dtype == scores.dtype
    # bool labels without a True
    loss, grad = loss_and_grad(scores, labels == 1, group_ids=LAYOUTS["per-class"]())
    assert loss.item() == 0.0 and grad.abs().sum().item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_single_group_equals_ungrouped(dtype):
    scores, labels = random_problem((40, 50), seed=32, dtype=dtype, ties=True, p_pos=0.05)
    expected, expected_grad = loss_and_grad(scores, labels)
    for ids in (
        torch.tensor(0),
        torch.zeros(50, dtype=torch.int64),
        torch.full((40, 50), 7),
        torch.full((40, 1), HUGE),  # all equal but large: the non-direct path
        torch.full((40, 50), 2**62, dtype=torch.int64),
        torch.full((1,), 123456789, dtype=torch.int32),
    ):
        loss, grad = loss_and_grad(scores, labels, group_ids=ids)
        # bitwise in practice; the spec asks for rounding
        torch.testing.assert_close(loss, expected, rtol=4 * torch.finfo(dtype).eps, atol=0)
        torch.testing.assert_close(grad, expected_grad, rtol=4 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("ids_kind", ["contiguous", "sparse-direct", "huge"])
def test_many_groups_retrieval(ids_kind):
    # 2000 queries x 40 candidates, shuffled, ~1-2 positives per query, some queries
    # without a positive; the ids are full-size.
    num_queries, per_query = 2000, 40
    g = torch.Generator().manual_seed(33)
    query = torch.arange(num_queries).repeat_interleave(per_query)
    query = query[torch.randperm(query.numel(), generator=g)]
    if ids_kind == "contiguous":
        id_of = torch.arange(num_queries)
    elif ids_kind == "sparse-direct":
        id_of = torch.randperm(60000, generator=g)[:num_queries]  # < 2**16: direct codes
    else:
        id_of = torch.randint(0, 2**40, (num_queries,), generator=g)
        id_of = torch.unique(id_of)[torch.randperm(num_queries, generator=g)]
    ids = id_of[query]
    scores = torch.randn(query.numel(), generator=g, dtype=torch.float64)
    labels = (torch.rand(query.numel(), generator=g) < 0.035).long()
    labels[torch.rand(query.numel(), generator=g) < 0.05] = -1
    loss, grad, per_group = assert_grouped_matches(scores, labels, ids)
    assert 1000 < len(per_group) < num_queries  # some queries have no positive
    if ids_kind == "huge":
        assert_grouped_matches(scores.float(), labels, ids, delta=0.5, interpolate=False)


def test_permutation_and_relabelling():
    scores, labels = random_problem((600,), seed=35, p_pos=0.08, dtype=torch.float64, ties=True)
    ids = full_ids((600,), 9, seed=9)
    loss, grad = loss_and_grad(scores, labels, group_ids=ids)
    perm = torch.randperm(600, generator=torch.Generator().manual_seed(36))
    loss_p, grad_p = loss_and_grad(scores[perm], labels[perm], group_ids=ids[perm])
    torch.testing.assert_close(loss_p, loss, rtol=1e-13, atol=0)
    torch.testing.assert_close(grad_p, grad[perm], rtol=1e-12, atol=1e-18)
    relabel = torch.tensor([HUGE, 0, 77, 5, 2**33, 12, 1, 999, 3])  # a bijection of the ids
    loss_r, grad_r = loss_and_grad(scores, labels, group_ids=relabel[ids])
    torch.testing.assert_close(loss_r, loss, rtol=1e-13, atol=0)
    torch.testing.assert_close(grad_r, grad, rtol=1e-12, atol=1e-18)


def test_thread_count_does_not_change_the_bits():
    # 50,000 entries in 64 groups: several chunks per thread.
    scores, labels = random_problem((50_000,), seed=37, p_pos=0.01, dtype=torch.float64)
    ids = full_ids((50_000,), 64, seed=10)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        loss_1, grad_1 = loss_and_grad(scores, labels, group_ids=ids)
    finally:
        torch.set_num_threads(old)
    loss_n, grad_n = loss_and_grad(scores, labels, group_ids=ids)
    assert loss_1.item() == loss_n.item() and torch.equal(grad_1, grad_n)  # CPU: bitwise


@pytest.mark.parametrize("p_pos", [0.02, 1e-4], ids=["large-segments", "small-segments"])
@pytest.mark.parametrize(
    "ids_shape", [(7,), (1, 1, 7), (11113, 7), ()], ids=["per-class", "leading-ones", "long-period", "scalar"]
)
def test_periodic_codes_equal_one_code_per_entry(ids_shape, p_pos):
    # Ids broadcast over leading dims reach the CPU kernels as one period of codes (read
    # code by code over whole rows, entry by entry at a chunk's ragged ends); the same ids
    # expanded to full size take the one-code-per-entry path. Two chunks whose boundary
    # falls inside a row (233,373 entries, period 7). Segments of at most 8 positives are
    # searched in q itself, larger ones through their tables.
    scores, labels = random_problem((3, 11113, 7), seed=41, p_pos=p_pos, dtype=torch.float64)
    ids = full_ids(ids_shape, 5, seed=11) if ids_shape else torch.tensor(3)
    loss, grad = loss_and_grad(scores, labels, group_ids=ids)
    loss_full, grad_full = loss_and_grad(
        scores, labels, group_ids=ids.expand(scores.shape).contiguous()
    )
    torch.testing.assert_close(loss, loss_full, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad, grad_full, rtol=1e-10, atol=1e-16)


def test_periodic_codes_report_the_first_non_finite_negative():
    # Code by code, class 2 of a row is visited before class 5 of the row above it.
    scores, labels = random_problem((2, 1000, 7), seed=42, p_pos=0.01, p_ignore=0.0)
    flat_labels = labels.view(-1)
    flat_labels[[26, 30]] = 0
    scores.view(-1)[[26, 30]] = float("nan")  # flat 26 = row 3, class 5; 30 = row 4, class 2
    with pytest.raises(ValueError, match=r"index 26\b"):
        aploss_cuda.ap_loss(scores, labels, group_ids=torch.arange(7))


# ---------------------------------------------------------------------------- API


def test_module_with_group_ids():
    scores, labels = image_class_problem(39, dtype=torch.float64)
    ids = LAYOUTS["per-image"]()
    module = aploss_cuda.APLoss(delta=0.5, interpolate=False)
    got = module(scores, labels, group_ids=ids)
    assert got.item() == aploss_cuda.ap_loss(
        scores, labels, delta=0.5, interpolate=False, group_ids=ids
    ).item()
    ref, _, _ = ap_grouped_reference(scores, labels, ids, 0.5, False)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    x = scores.clone().requires_grad_(True)
    module(x, labels, group_ids=ids).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------- errors


def test_errors():
    scores, labels = image_class_problem(41)
    cases = [
        (torch.arange(5).float(), TypeError, r"group_ids must be an integer tensor, got torch.float32"),
        (torch.arange(5).double(), TypeError, r"integer tensor, got torch.float64"),
        (torch.ones(5, dtype=torch.bool), TypeError, r"integer tensor, got torch.bool"),
        ([0, 1, 2, 3, 4], TypeError, r"group_ids must be a tensor, got list"),
        (torch.tensor([0, 1, -3, 2, 1]), ValueError, r"group_ids must be >= 0, found -3"),
        (torch.tensor([-1], dtype=torch.int8), ValueError, r">= 0, found -1"),
        (torch.full((B, A, C), -(2**40)), ValueError, r">= 0, found -1099511627776"),
        (torch.arange(4), ValueError, r"group_ids.shape \(4,\) is not broadcastable to scores.shape \(4, 30, 5\)"),
        (torch.zeros(4, 1, dtype=torch.int64), ValueError, r"\(4, 1\).*\(4, 30, 5\)"),
        (torch.zeros(4, 2, dtype=torch.int64), ValueError, r"\(4, 2\).*\(4, 30, 5\)"),
        (torch.zeros(2, 4, 30, 5, dtype=torch.int64), ValueError, r"\(2, 4, 30, 5\).*\(4, 30, 5\)"),
        (torch.zeros(1, 4, 30, 5, dtype=torch.int64), ValueError, r"\(1, 4, 30, 5\).*\(4, 30, 5\)"),
        (torch.arange(5, device="meta"), ValueError, r"scores are on cpu but group_ids are on meta"),
    ]
    for ids, error, match in cases:
        with pytest.raises(error, match=match):
            aploss_cuda.ap_loss(scores, labels, group_ids=ids)
    with pytest.raises(ValueError, match="pairwise"):
        aploss_cuda.ap_loss(scores, labels, group_ids=torch.arange(5), method="pairwise")
    with pytest.raises(ValueError, match="pairwise"):
        aploss_cuda.APLoss(method="pairwise")(scores, labels, group_ids=torch.arange(5))
    # the operator checks too (torch.compile and direct callers bypass the Python checks)
    with pytest.raises(TypeError, match="integer"):
        operators.forward("ap", scores, labels, torch.arange(5).float())
    with pytest.raises(ValueError, match=r"not broadcastable"):
        operators.forward("ap", scores, labels, torch.arange(4))
    with pytest.raises(ValueError, match="pairwise"):
        operators.forward("ap", scores, labels, torch.arange(5), method="pairwise")
    with pytest.raises(ValueError, match=r">= 0, found -2"):
        operators.forward("ap", scores, labels, torch.tensor([0, -2, 1, 1, 1]))


def test_large_ids_numbered_or_refused_after_an_early_stop():
    # From 2^16 full-size ids on the CPU, the pass that narrows ids to codes stops at the
    # first id outside what direct codes take; the ids are then numbered, and a negative
    # signed id is refused with the lowest id, wherever it lies.
    n = 1 << 17
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    labels = (torch.rand(n, generator=g) < 0.02).long()
    ids = torch.randint(0, 300, (n,), generator=g)
    expected = loss_and_grad(scores, labels, group_ids=ids)
    for sparse in (ids * 1_000_003, (ids * 1_000_003).to(torch.int32) // 2,
                   (ids + 2**63 - 150).to(torch.uint64)):  # the last half negative as int64
        got = loss_and_grad(scores, labels, group_ids=sparse)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for early in (False, True):  # a large id first: the stop comes before the negative one
        bad = ids.clone()
        bad[n - 3] = -5
        bad[n - 9] = -7
        if early:
            bad[0] = 2**40
        with pytest.raises(ValueError, match=r"group_ids must be >= 0, found -7$"):
            aploss_cuda.ap_loss(scores, labels, group_ids=bad)
        with pytest.raises(ValueError, match=r">= 0, found -7$"):
            aploss_cuda.ap_loss(scores, labels, group_ids=bad.to(torch.int32))


# Ids no positive has, among negatives: at the direct-code limit (2^16 at this size) and
# beyond, beyond int32 for int64 ids, and ids whose low 32 bits are a small id's (2^32 + 3
# is not 3).
LARGE_IDS = {
    torch.int32: [65536, 10**6, 2**31 - 1],
    torch.int64: [65536, 10**6, 2**31 - 1, 2**32, 2**32 + 3, 2**40 + 1, 2**63 - 1],
}


@pytest.mark.parametrize("lanes", [True, False], ids=["lanes", "scalar"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32], ids=str)
@pytest.mark.parametrize("n", [(1 << 12) + 13, (1 << 16) + 13], ids=["bounds", "narrowing"])
def test_full_size_ids_large_ones_without_positives(n, dtype, lanes):
    # An id that no positive has, however large, is a group without positives: the result
    # is the one with those entries moved to a small id that no positive has, bit for bit,
    # and the reference loop's. (From 2^16 ids on, the CPU finds their bounds in the pass
    # that narrows them; N is not a multiple of the lanes' width.)
    scores, labels = random_problem((n,), seed=21, p_pos=0.02)
    ids = torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(21)).to(dtype)
    marked = (labels == 0).nonzero().flatten()[::5]
    large = torch.tensor(LARGE_IDS[dtype], dtype=dtype)
    with_large, with_small = ids.clone(), ids.clone()
    with_large[marked] = large.repeat(len(marked) // len(large) + 1)[:len(marked)]
    with_small[marked] = 40
    with contextlib.nullcontext() if lanes else scalar_path():
        got = loss_and_grad(scores, labels, group_ids=with_large)
        expected = loss_and_grad(scores, labels, group_ids=with_small)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert_grouped_matches(scores, labels, with_large)


@pytest.mark.parametrize("lanes", [True, False], ids=["lanes", "scalar"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32], ids=str)
def test_full_size_ids_refuse_a_negative_one(dtype, lanes):
    # A negative id is refused wherever it lies (a negative's, alone amid the entries or
    # beside a non-finite score; a positive's; no positive at all), and the error names
    # the lowest id.
    n = (1 << 12) + 5
    scores, labels = random_problem((n,), seed=22, p_pos=0.02)
    ids = torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(22)).to(dtype)
    negatives = (labels == 0).nonzero().flatten()
    positive = (labels == 1).nonzero().flatten()[3]
    lowest = torch.iinfo(dtype).min
    cases = []
    among_negatives = ids.clone()
    among_negatives[negatives[-2]], among_negatives[negatives[10]] = -5, -7
    cases.append((scores, labels, among_negatives, -7))
    alone = ids.clone()  # away from the edges of the CPU passes' blocks of 256 entries
    alone[negatives[(negatives % 256 >= 16) & (negatives % 256 < 240)][20]] = -11
    cases.append((scores, labels, alone, -11))
    nan_score = scores.clone()
    nan_score[negatives[0]] = float("nan")
    cases.append((nan_score, labels, among_negatives, -7))
    at_a_positive = ids.clone()
    at_a_positive[positive], at_a_positive[negatives[-1]] = -3, lowest
    cases.append((scores, labels, at_a_positive, lowest))
    cases.append((scores, torch.zeros_like(labels), among_negatives, -7))
    with contextlib.nullcontext() if lanes else scalar_path():
        for s, y, bad, low in cases:
            with pytest.raises(ValueError, match=rf"group_ids must be >= 0, found {low}$"):
                aploss_cuda.ap_loss(s, y, group_ids=bad)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_sparse_ids_numbered_in_order_of_first_appearance(threads):
    # The CPU numbers sparse ids chunk by chunk (one chunk per thread, 2^16 ids or more
    # each), merges the chunks' tables, then maps every later chunk's codes, the threads
    # sharing those entries across chunk boundaries: the codes are the ids' order of
    # first appearance, whatever the thread count.
    n = 5 << 16
    g = torch.Generator().manual_seed(8)
    scores = torch.randn(n, generator=g)
    labels = (torch.rand(n, generator=g) < 0.01).long()
    ids = torch.randint(0, 3000, (n,), generator=g) * 1_000_003
    values, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((len(values),), n).scatter_reduce(0, inverse, torch.arange(n), "amin")
    expected = torch.argsort(torch.argsort(first))[inverse].int()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # Ids broadcast over two scores per row: the forward returns their codes (with one
        # id per entry, the intervals its pass 1 recorded instead).
        two = (scores[:, None].expand(n, 2), labels[:, None].expand(n, 2), ids[:, None])
        codes = operators.saved("ap", operators.forward("ap", *two)).codes
    finally:
        torch.set_num_threads(old)
    assert torch.equal(codes.flatten(), expected)


# ------------------------------------------------------------- intervals recorded by pass 1


def backward_from(loss, kept, scores, second, codes):
    """loss_backward from the forward's state with these codes (recorded or not)."""
    return operators.backward(torch.ones(()), scores, getattr(kept, "labels", second),
                              kept.classes, codes, kept.state, kept.offsets, kept.positive_grads,
                              1.0)


# (scores' shape, the order of their dims in memory, ids' shape): codes read in place;
# scores laid out otherwise than the contiguous ids (the codes are copied in the scores'
# memory order; AP-loss's operator takes such scores, the others' contiguous ones); ids
# without the leading 1.
RECORDING_LAYOUTS = {
    "contiguous": ((3, 700, 6), (0, 1, 2), (3, 700, 6)),
    "permuted-scores": ((3, 700, 6), (2, 0, 1), (3, 700, 6)),
    "ids-without-leading-dim": ((1, 700, 6), (0, 1, 2), (700, 6)),
}


def in_memory_order(t, order):
    """t's values, its dims laid out in memory in `order` (outermost first)."""
    return t.permute(*order).contiguous().permute(*torch.argsort(torch.tensor(order)).tolist())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lanes", [True, False], ids=["lanes", "scalar"])
@pytest.mark.parametrize("loss, layout", [(loss, layout) for loss in losses.LOSSES
                                          for layout in sorted(RECORDING_LAYOUTS)
                                          if loss == "ap" or layout != "permuted-scores"])
def test_recorded_intervals_give_the_codes_gradient(loss, layout, lanes, dtype):
    # With one id per entry, the CPU forward's pass 1 writes each entry's interval over its
    # codes and returns those (uint32, shaped like the ids); pass 2 reads them instead of
    # finding the intervals again. Its gradient is pass 2's from the codes, bit for bit.
    shape, order, ids_shape = RECORDING_LAYOUTS[layout]
    scores, second, extra = losses.problem(loss, shape, seed=17, dtype=dtype)
    scores, second = in_memory_order(scores, order), in_memory_order(second, order)
    ids = torch.randint(0, 50, ids_shape, generator=torch.Generator().manual_seed(4))
    with contextlib.nullcontext() if lanes else scalar_path():
        kept = operators.saved(loss, operators.forward(loss, scores, second, ids, **extra))
        assert kept.codes.dtype == torch.uint32 and kept.codes.shape == ids.shape
        assert kept.codes.is_contiguous()
        recorded = backward_from(loss, kept, scores, second, kept.codes)
        # Ids in [0, 50) are their own codes.
        coded = backward_from(loss, kept, scores, second, ids.to(torch.int32))
    assert recorded.abs().sum() > 0
    assert torch.equal(recorded, coded)


def test_recorded_intervals_out_of_range_have_no_gradient():
    # loss_backward takes any uint32 codes as recorded intervals: a number past the index's
    # last has no gradient (nothing is read out of bounds); the other entries keep theirs.
    n = 6000
    scores, labels = random_problem((n,), seed=3, p_pos=0.02)
    ids = torch.randint(0, 20, (n,), generator=torch.Generator().manual_seed(3))
    kept = operators.saved("ap", operators.forward("ap", scores, labels, ids))
    broken = (labels == 0).nonzero().flatten()[::7]
    codes = kept.codes.clone()
    bad = torch.tensor([-1, 2**31 - 1, -(2**31), 10**6], dtype=torch.int32)
    codes.view(torch.int32)[broken] = bad.repeat(len(broken) // len(bad) + 1)[:len(broken)]
    expected = backward_from("ap", kept, scores, labels, kept.codes)
    grad = backward_from("ap", kept, scores, labels, codes)
    assert expected[broken].ne(0).any() and grad[broken].eq(0).all()
    kept_entries = torch.ones(n, dtype=torch.bool)
    kept_entries[broken] = False
    assert torch.equal(grad[kept_entries], expected[kept_entries])
    with pytest.raises(ValueError, match=r"one per entry \(6000\); got 1 on cpu$"):
        backward_from("ap", kept, scores, labels, kept.codes[:1])


@pytest.mark.parametrize("target", EMULATED[:1], ids=str)
def test_recorded_intervals_only_where_the_device_records_them(target):
    # The CUDA kernels record no intervals: their forward returns int32 codes, and their
    # backward refuses uint32 ones. No operator but loss_backward takes uint32 codes.
    n = 3000
    scores, labels = random_problem((n,), seed=5, p_pos=0.02)
    ids = torch.randint(0, 9, (n,), generator=torch.Generator().manual_seed(5))
    recorded = operators.saved("ap", operators.forward("ap", scores, labels, ids)).codes
    assert recorded.dtype == torch.uint32
    with target.running():
        kept = operators.saved("ap", operators.forward("ap", scores, labels, ids))
        assert kept.codes.dtype == torch.int32 and torch.equal(kept.codes, ids.to(torch.int32))
        with pytest.raises(ValueError, match="intervals that a CPU forward recorded.*records none"):
            backward_from("ap", kept, scores, labels, recorded)
    with pytest.raises(TypeError, match="codes must be int32"):
        operators.gather(scores, labels, recorded)


# ------------------------------------------------------------------------- broadcast ids on a GPU


@pytest.mark.parametrize("target", EMULATED[:1], ids=str)
def test_broadcast_ids_numbered_on_the_device(target):
    # Fewer ids than scores: numbered on the device without a host read (repeated and
    # sparse values, negative ones raised by the gather with the value).
    scores, labels = image_class_problem(43)
    for ids in (torch.tensor([3, 3, 7, 1, 7]), torch.tensor([9, 2**40, 9, 0, 5], dtype=torch.int64),
                torch.tensor([[[2]], [[0]], [[2]], [[1]]], dtype=torch.int8)):
        expected = aploss_cuda.ap_loss(scores, labels, group_ids=ids)
        with target.running():
            got = aploss_cuda.ap_loss(scores, labels, group_ids=ids)
        torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])
    # More ids than compared pairwise: numbered through a sort.
    big_scores, big_labels = image_class_problem(44, A=600)
    many = torch.randint(0, 700, (B, 600, 1), generator=torch.Generator().manual_seed(3)) * 7
    expected = aploss_cuda.ap_loss(big_scores, big_labels, group_ids=many)
    with target.running():
        got = aploss_cuda.ap_loss(big_scores, big_labels, group_ids=many)
        torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])
        with pytest.raises(ValueError, match=r">= 0, found -5$"):
            aploss_cuda.ap_loss(big_scores, big_labels, group_ids=many - 5)
    with target.running():
        with pytest.raises(ValueError, match=r"group_ids must be >= 0, found -3$"):
            aploss_cuda.ap_loss(scores, labels, group_ids=torch.tensor([0, 1, -3, 2, -1]))
        with pytest.raises(ValueError, match=r">= 0, found -1099511627776$"):
            aploss_cuda.ap_loss(scores, labels, group_ids=torch.full((B, 1, 1), -(2**40)))
