"""Rank & Sort loss and aLRP loss against their float64 references (aploss_cuda.reference),
one body per property on every target (tests/devices.py): the CPU kernels, the CUDA
kernels on the emulated device, a real GPU when present. Then the input contract, the
operators' registration (opcheck, torch.compile) and the module forms."""

import pytest
import torch
from devices import TARGETS
from helpers import TOLERANCE, opcheck

import aploss_cuda
from aploss_cuda.reference import alrp_loss_reference, rank_sort_loss_reference

targets = pytest.mark.parametrize("target", TARGETS, ids=str)


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


def family_problem(n, *, seed=0, dtype=torch.float64, p_pos=0.15, p_ignore=0.1, ties=False,
                   loc=0.0, scale=1.5):
    """Scores, Rank & Sort targets (IoU-like in [0.05, 1], some exactly 1), 1/0/-1 labels
    and one regression loss per positive."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=torch.float64) * scale + loc
    if ties:
        scores = (scores * 2).round() / 2 + loc - loc  # coarse grid: many tied scores
    u = torch.rand(n, generator=g)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[u < p_pos] = 1
    labels[(u >= p_pos) & (u < p_pos + p_ignore)] = -1
    iou = torch.rand(n, generator=g, dtype=torch.float64) * 0.95 + 0.05
    if ties:
        iou = (iou * 4).ceil() / 4  # tied targets, and targets equal to 1
    iou[torch.rand(n, generator=g) < 0.1] = 1.0
    targets = torch.where(labels == 1, iou, labels.to(torch.float64))
    num_pos = int((labels == 1).sum())
    regression = torch.rand(num_pos, generator=g, dtype=torch.float64)
    return scores.to(dtype), targets.to(dtype), labels, regression.to(dtype)


def assert_close(got, expected, dtype, *, scale=None):
    tol = TOLERANCE[dtype]
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    scale = expected.abs().max().item() if scale is None and expected.numel() else (scale or 0.0)
    torch.testing.assert_close(got, expected, rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * scale)


def rank_sort_on(target, scores, targets_, **kwargs):
    x = target.put(scores).detach().clone().requires_grad_(True)
    with target.running():
        parts = aploss_cuda.rank_sort_loss(x, target.put(targets_), return_parts=True, **kwargs)
        parts.loss.backward()
    assert parts.loss.dtype == scores.dtype and parts.loss.dim() == 0
    assert not parts.ranking.requires_grad and not parts.sorting.requires_grad
    return [t.detach().cpu() for t in (parts.loss, parts.ranking, parts.sorting, x.grad)]


def check_rank_sort(target, scores, targets_, group_ids=None, delta=0.5):
    kwargs = dict(delta=delta)
    if group_ids is not None:
        kwargs["group_ids"] = target.put(group_ids)
    loss, ranking, sorting, grad = rank_sort_on(target, scores, targets_, **kwargs)
    ref = rank_sort_loss_reference(scores, targets_, delta=delta, group_ids=group_ids)
    for got, expected in zip((loss, ranking, sorting), ref[:3]):
        assert_close(got, expected, scores.dtype, scale=1.0)
    assert_close(grad, ref[3], scores.dtype)
    return loss, grad


def alrp_on(target, scores, labels, regression, **kwargs):
    x = target.put(scores).detach().clone().requires_grad_(True)
    l = target.put(regression).detach().clone().requires_grad_(True)
    with target.running():
        cls_loss, loc_loss = aploss_cuda.alrp_loss(x, target.put(labels), l, **kwargs)
        (cls_loss + loc_loss).backward()
    assert cls_loss.dtype == scores.dtype and loc_loss.dtype == regression.dtype
    return [t.detach().cpu() for t in (cls_loss, loc_loss, x.grad, l.grad)]


def check_alrp(target, scores, labels, regression, group_ids=None, delta=1.0):
    kwargs = dict(delta=delta)
    if group_ids is not None:
        kwargs["group_ids"] = target.put(group_ids)
    cls_loss, loc_loss, grad, regression_grad = alrp_on(target, scores, labels, regression, **kwargs)
    l = regression.detach().double().clone().requires_grad_(True)
    ref_cls, ref_loc, ref_grad = alrp_loss_reference(scores, labels, l, delta=delta, group_ids=group_ids)
    ref_loc.backward()
    assert_close(cls_loss, ref_cls, scores.dtype, scale=1.0)
    assert_close(loc_loss, ref_loc, regression.dtype, scale=1.0)
    assert_close(grad, ref_grad, scores.dtype)
    assert_close(regression_grad, l.grad, regression.dtype)
    return cls_loss, grad


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


@targets
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_huge_and_tiny_scores(target, dtype):
    big, tiny = 1e30, torch.finfo(dtype).tiny / 4
    scores = torch.tensor([big, -big, tiny, -tiny, 0.0, 1.0, big, -big, 3 * tiny, 0.5, big], dtype=dtype)
    targets_ = torch.tensor([0.5, 0.0, 1.0, 0.0, 0.0, 0.7, 0.0, 0.2, 0.0, 0.0, 0.9], dtype=dtype)
    loss, grad = check_rank_sort(target, scores, targets_)
    assert torch.isfinite(loss).item() and torch.isfinite(grad).all().item()
    labels = (targets_ > 0).long()
    check_alrp(target, scores, labels, torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=dtype))


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


def test_gradient_scales_with_grad_output():
    scores, targets_, labels, regression = family_problem(200, seed=9)
    for fn in (lambda x: aploss_cuda.rank_sort_loss(x, targets_),
               lambda x: aploss_cuda.alrp_loss(x, labels, regression)[0]):
        grads = []
        for factor in (1.0, -3.0):
            x = scores.clone().requires_grad_(True)
            (fn(x) * factor).backward()
            grads.append(x.grad / factor)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-15)


# ---- registration -------------------------------------------------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grouped", [False, True])
def test_opcheck(device, grouped):
    scores, targets_, labels, regression = family_problem(120, seed=10)
    scores, targets_, labels, regression = (t.to(device) for t in (scores, targets_, labels, regression))
    ids = (torch.arange(120, device=device) % 3) if grouped else None
    for requires_grad in (False, True):
        x = scores.clone().requires_grad_(requires_grad)
        opcheck(torch.ops.aploss.loss_forward.default,
                ("rank_sort_loss", x, targets_, None, ids, 0.5, False, "sorted"))
        opcheck(torch.ops.aploss.loss_forward.default,
                ("alrp_loss", x, labels, regression, ids, 1.0, False, "sorted"))
    _, _, state, offsets, codes, int8_labels, positive_grads, classes = (
        torch.ops.aploss.loss_forward("rank_sort_loss", scores, targets_, None, ids, 0.5, False,
                                      "sorted"))
    args = (torch.tensor(2.0, device=device), scores, int8_labels, classes,
            codes if grouped else None, state, offsets, positive_grads, 0.5, "sorted")
    opcheck(torch.ops.aploss.loss_backward.default, args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grouped", [False, True])
def test_stage_operators(device, grouped):
    # The stages process_group composes: each against its fake, and together equal to the
    # one-call forward.
    scores, targets_, labels, regression = (
        t.to(device) for t in family_problem(150, seed=14, ties=True)
    )
    codes = (torch.arange(150, device=device) % 3).to(torch.int32) if grouped else None
    num_groups = 3 if grouped else 1
    opcheck(torch.ops.aploss.loss_labels.default, ("rank_sort_loss", targets_))
    int8_labels = torch.ops.aploss.loss_labels("rank_sort_loss", targets_)
    for loss_name, entry_labels in (("rank_sort", int8_labels), ("alrp", labels)):
        gathered = torch.ops.aploss.gather(scores, entry_labels, codes)
        positives, offsets, group, positions, memory_rank = torch.ops.aploss.rank_positives(
            gathered, num_groups, 1.0
        )
        fp = torch.ops.aploss.pass1(scores, entry_labels, codes, positives, offsets, group, 1.0,
                                    "sorted")
        # Each positive's value, in the positives' memory order.
        in_memory_order = positions.sort().values
        if loss_name == "rank_sort":
            values = torch.ops.aploss.positive_values("rank_sort_loss", scores, targets_, None,
                                                      in_memory_order)
            args = ("rank_sort_loss", positives, offsets, group, positions, memory_rank, fp,
                    values, 1.0, False, torch.float64, "sorted")
            opcheck(torch.ops.aploss.positive_stage.default, args)
            loss = torch.ops.aploss.positive_stage(*args)[0]
            expected = aploss_cuda.rank_sort_loss(scores, targets_, delta=1.0,
                                                  group_ids=codes.long() if grouped else None)
        else:
            values = torch.ops.aploss.positive_values("alrp_loss", scores, labels, regression,
                                                      in_memory_order)
            args = ("alrp_loss", positives, offsets, group, positions, memory_rank, fp, values,
                    1.0, False, torch.float64, "sorted")
            opcheck(torch.ops.aploss.positive_stage.default, args)
            loss = torch.ops.aploss.positive_stage(*args)[0]
            expected = aploss_cuda.alrp_loss(scores, labels, regression, delta=1.0,
                                             group_ids=codes.long() if grouped else None)[0]
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(device, dynamic):
    torch._dynamo.reset()
    scores, targets_, labels, regression = (
        t.to(device) for t in family_problem(300, seed=11, dtype=torch.float32)
    )

    def step(scores, targets_, labels, regression):
        rs = aploss_cuda.rank_sort_loss(scores, targets_)
        cls_loss, loc_loss = aploss_cuda.alrp_loss(scores, labels, regression)
        return rs + cls_loss + 0.5 * loc_loss

    compiled = torch.compile(step, fullgraph=True, dynamic=dynamic)
    results = []
    for fn in (step, compiled):
        x = scores.clone().requires_grad_(True)
        l = regression.clone().requires_grad_(True)
        out = fn(x, targets_, labels, l)
        out.backward()
        results.append((out.detach(), x.grad, l.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


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


def test_no_double_backward():
    scores, targets_, _, _ = family_problem(50, seed=13)
    x = scores.clone().requires_grad_(True)
    loss = aploss_cuda.rank_sort_loss(x, targets_)
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad.sum().backward()
