"""Rank & Sort loss and aLRP loss against their float64 references (aploss_cuda.reference),
one body per property on every target (tests/devices.py): the CPU kernels, the CUDA
kernels on the emulated device, a real GPU when present. Then the input contract and the
module forms. (opcheck: tests/test_opcheck.py; the stage operators:
tests/test_stage_operators.py; torch.compile: tests/test_compile.py.)"""

import pytest
import torch
from devices import TARGETS
from family_checks import check_alrp, check_rank_sort, family_problem

import aploss_cuda

targets = pytest.mark.parametrize("target", TARGETS, ids=str)


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


# ---- agreement with the references ------------------------------------------------------

CASES = {
    "random": dict(),
    "ties": dict(ties=True),
    "few-positives": dict(p_pos=0.02),
    "many-positives": dict(p_pos=0.6, p_ignore=0.0),
    "large-scores": dict(loc=1e9, ties=True),
    "tiny-spread": dict(scale=1e-4),
}


# float32 cannot hold a spread of scores around 1e9: that case runs in float64 only.
case_and_dtype = pytest.mark.parametrize(
    ("case", "dtype"),
    [(case, dtype) for case in CASES for dtype in (torch.float32, torch.float64)
     if dtype == torch.float64 or not CASES[case].get("loc")],
    ids=lambda v: dtype_id(v) if isinstance(v, torch.dtype) else str(v),
)


@targets
@case_and_dtype
def test_rank_sort_matches_reference(target, case, dtype):
    scores, targets_, _, _ = family_problem(500, seed=1, dtype=dtype, **CASES[case])
    for delta in (0.5, 0.05):
        check_rank_sort(target, scores, targets_, delta=delta)


@targets
@case_and_dtype
def test_alrp_matches_reference(target, case, dtype):
    scores, _, labels, regression = family_problem(500, seed=2, dtype=dtype, **CASES[case])
    for delta in (1.0, 0.1):
        check_alrp(target, scores, labels, regression, delta=delta)


@targets
def test_eps_gates_and_edge_mixes(target):
    # Every positive far above every negative: FP = 0, no ranking update (both gates).
    scores = torch.tensor([5.0, 6.0, 6.2, 7.0, -3.0, -4.0, 0.0, 6.1], dtype=torch.float64)
    targets_ = torch.tensor([0.3, 0.9, 1.0, 0.6, 0.0, 0.0, -1.0, 0.9], dtype=torch.float64)
    check_rank_sort(target, scores, targets_)
    labels = (targets_ > 0).long() - (targets_ < 0).long()
    check_alrp(target, scores, labels, torch.tensor([0.1, 0.4, 0.2, 0.3, 0.5], dtype=torch.float64))
    # Every score equal: each H is exactly 1/2; no positive; no negative; all ignored.
    n = 40
    equal = torch.zeros(n, dtype=torch.float64)
    mixes = {
        "equal scores": torch.where(torch.arange(n) % 4 == 0, 0.5, 0.0).double(),
        "no positive": torch.zeros(n, dtype=torch.float64),
        "no negative": torch.linspace(0.1, 1.0, n, dtype=torch.float64),
        "all ignored": torch.full((n,), -1.0, dtype=torch.float64),
    }
    for name, t in mixes.items():
        loss, grad = check_rank_sort(target, equal if name == "equal scores" else torch.randn(n).double(), t)
        if name in ("no positive", "all ignored"):
            assert loss.item() == 0.0 and grad.abs().sum().item() == 0.0, name
        labels = (t > 0).long() - (t < 0).long()
        check_alrp(target, equal, labels, torch.rand(int((labels == 1).sum()), dtype=torch.float64))


GROUPINGS = {
    "per-image": lambda b, n: torch.arange(b).view(b, 1),
    "per-class": lambda b, n: (torch.arange(n) % 3).view(1, n),
    "full-size": lambda b, n: torch.randint(0, 5, (b, n), generator=torch.Generator().manual_seed(4)),
    "one-group": lambda b, n: torch.zeros(1, 1, dtype=torch.int64),
}


@targets
@pytest.mark.parametrize("grouping", GROUPINGS, ids=str)
def test_groups(target, grouping):
    b, n = 4, 90
    scores, targets_, labels, regression = family_problem(b * n, seed=3, ties=True)
    scores, targets_, labels = (t.view(b, n) for t in (scores, targets_, labels))
    ids = GROUPINGS[grouping](b, n)
    check_rank_sort(target, scores, targets_, group_ids=ids)
    check_alrp(target, scores, labels, regression, group_ids=ids)


@targets
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_half_precision(target, dtype):
    """fp16 / bf16 scores: the loss and gradient are the reference's on the rounded scores,
    within the output dtype's tolerance (helpers.TOLERANCE)."""
    if not target.compiles(scores=dtype, labels=torch.int8):
        pytest.skip(f"the emulated device does not compile {dtype}")
    scores, targets_, labels, regression = family_problem(400, seed=6, dtype=dtype)
    check_rank_sort(target, scores, targets_)
    check_alrp(target, scores, labels, regression)


@targets
def test_non_contiguous_inputs(target):
    # Regression losses follow labels[labels == 1] (row-major) whatever the layout.
    scores, targets_, labels, regression = family_problem(8 * 30, seed=7)
    scores_t, targets_t, labels_t = (t.view(30, 8).t() for t in (scores, targets_, labels))
    check_rank_sort(target, scores_t, targets_t)
    order = labels_t.contiguous().view(-1)
    regression_t = torch.rand(int((order == 1).sum()), dtype=torch.float64)
    check_alrp(target, scores_t, labels_t, regression_t)


# ---- input contract ---------------------------------------------------------------------


@targets
def test_bad_targets_are_value_errors(target):
    scores = target.put(torch.randn(6))
    put = target.put
    with target.running():
        for bad, message in [(1.5, "in \\(0, 1\\]"), (float("nan"), "nan"), (float("inf"), "inf")]:
            t = put(torch.tensor([0.5, 0.0, bad, -1.0, 0.0, 1.0]))
            with pytest.raises(ValueError, match=message):
                aploss_cuda.rank_sort_loss(scores, t)
        with pytest.raises(TypeError, match="targets must have a floating dtype"):
            aploss_cuda.rank_sort_loss(scores, put(torch.ones(6, dtype=torch.int64)))
        with pytest.raises(ValueError, match="targets.shape"):
            aploss_cuda.rank_sort_loss(scores, put(torch.ones(5)))
        with pytest.raises(ValueError, match="finite"):
            aploss_cuda.rank_sort_loss(put(torch.tensor([0.0, float("nan")])), put(torch.tensor([0.5, 0.0])))
        with pytest.raises(ValueError, match="delta"):
            aploss_cuda.rank_sort_loss(scores, put(torch.zeros(6)), delta=0.0)


# The host's one pass over the targets (the CPU), or ATen's (a GPU); the emulated device
# runs the CPU's pass too, on 200,000 entries too slowly for a test of the pass alone.
@pytest.mark.parametrize("target", [t for t in TARGETS if not t.emulated], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=dtype_id)
def test_targets_over_several_chunks(target, dtype):
    # More entries than one chunk of the host's pass: labels from every kind of target,
    # and the first bad target named when another chunk (one per thread) has one too.
    n = 3 * 65536 + 77
    g = torch.Generator().manual_seed(11)
    kinds = torch.tensor([-1.0, -0.5, -0.0, 0.0, 0.25, 1.0], dtype=dtype)
    t = kinds[torch.randint(0, 6, (n,), generator=g)]
    scores = torch.randn(n, generator=g)
    # -0.5 is ignored like -1, -0.0 a negative like 0.0.
    plain = torch.where(t < 0, torch.full_like(t, -1.0), t).masked_fill(t == 0, 0.0)
    with target.running():
        ours = aploss_cuda.rank_sort_loss(target.put(scores), target.put(t))
        expected = aploss_cuda.rank_sort_loss(target.put(scores), target.put(plain))
        torch.testing.assert_close(ours.cpu(), expected.cpu(), rtol=0, atol=0)
        bad = t.clone()
        bad[3 * 65536 + 10] = float("nan")
        bad[65536 + 5] = 1.5
        with pytest.raises(ValueError, match=f"found 1.5 at flat index {65536 + 5} "):
            aploss_cuda.rank_sort_loss(target.put(scores), target.put(bad))


@targets
def test_bad_regression_losses(target):
    put = target.put
    scores = put(torch.randn(6))
    labels = put(torch.tensor([1, 0, 1, -1, 0, 1]))
    good = put(torch.rand(3))
    cases = [
        (torch.rand(2), ValueError, "one value per positive"),
        (torch.rand(4), ValueError, "one value per positive"),
        (torch.rand(3, 1), ValueError, "1-D"),
        (torch.tensor([0.1, -0.2, 0.3]), ValueError, ">= 0"),
        (torch.tensor([0.1, float("nan"), 0.3]), ValueError, ">= 0"),
        (torch.tensor([0.1, float("inf"), 0.3]), ValueError, "finite"),
        (torch.ones(3, dtype=torch.int64), TypeError, "floating"),
    ]
    with target.running():
        aploss_cuda.alrp_loss(scores, labels, good)
        for losses, error, message in cases:
            with pytest.raises(error, match=message):
                aploss_cuda.alrp_loss(scores, labels, put(losses))
        with pytest.raises(TypeError, match="must be a tensor"):
            aploss_cuda.alrp_loss(scores, labels, [0.1, 0.2, 0.3])
        with pytest.raises(ValueError, match="labels must be 1"):
            aploss_cuda.alrp_loss(scores, put(torch.tensor([1, 0, 2, -1, 0, 1])), good)
    if torch.cuda.is_available() and not target.gpu:
        with pytest.raises(ValueError, match="regression_losses are on"):
            aploss_cuda.alrp_loss(scores, labels, good.cuda())


def test_bad_regression_losses_beyond_the_one_block_sort():
    # On the emulated small GPU (512 positives in its sort) 600 positives take the second
    # round, whose stage checks the values after the first host read.
    from devices import EMULATED

    target = [t for t in EMULATED if t.profile == "small"][0]
    scores, labels = torch.randn(2000), torch.zeros(2000, dtype=torch.int64)
    labels[:600] = 1
    losses = torch.rand(600)
    losses[17] = -1.0
    with target.running(), pytest.raises(ValueError, match=">= 0"):
        aploss_cuda.alrp_loss(scores, labels, losses)


def test_no_positive_gives_zero_and_a_graph():
    scores = torch.randn(10, requires_grad=True)
    loss = aploss_cuda.rank_sort_loss(scores, torch.zeros(10))
    loss.backward()
    assert loss.item() == 0.0 and scores.grad.abs().sum().item() == 0.0
    scores.grad = None
    l = torch.zeros(0, requires_grad=True)
    cls_loss, loc_loss = aploss_cuda.alrp_loss(scores, torch.zeros(10, dtype=torch.int64), l)
    (cls_loss + loc_loss).backward()
    assert cls_loss.item() == 0.0 and loc_loss.item() == 0.0


# ---- the module forms ---------------------------------------------------------------------


def test_modules():
    scores, targets_, labels, regression = family_problem(100, seed=12)
    rs = aploss_cuda.RankSortLoss(delta=0.25)
    assert "delta=0.25" in repr(rs)
    torch.testing.assert_close(rs(scores, targets_), aploss_cuda.rank_sort_loss(scores, targets_, delta=0.25))
    parts = rs(scores, targets_, return_parts=True)
    torch.testing.assert_close(parts.loss, parts.ranking + parts.sorting)
    alrp = aploss_cuda.ALRPLoss(delta=0.5)
    for got, expected in zip(alrp(scores, labels, regression),
                             aploss_cuda.alrp_loss(scores, labels, regression, delta=0.5)):
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="delta"):
        aploss_cuda.ALRPLoss(delta=-1.0)

