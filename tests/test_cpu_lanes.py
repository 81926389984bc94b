"""The CPU passes' vector lanes (csrc/cpu/interval_lanes_cpu.h) against the scalar per-entry
functions they restate: the same loss and gradient bit for bit, the same errors. Where the
CPU has no AVX2 both runs take the scalar path and the comparison still holds."""

import pytest
import torch
import groupings
from helpers import assert_same_result, random_problem, scalar_path

import aploss_cuda

LABEL_DTYPES = [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool, torch.float32,
                torch.float64]
SCORE_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def test_info_names_the_lanes():
    assert aploss_cuda.info()["cpu_vector_lanes"] in ("avx2", None)
    with scalar_path():
        assert aploss_cuda.info()["cpu_vector_lanes"] is None


def both_paths(fn):
    """fn() with the lanes, then with the scalar path."""
    lanes = fn()
    with scalar_path():
        scalar = fn()
    return lanes, scalar


def loss_and_grad(loss_fn, scores, *args, **kwargs):
    x = scores.detach().clone().requires_grad_(True)
    loss = loss_fn(x, *args, **kwargs)
    loss.backward()
    return loss.detach(), x.grad


def assert_bitwise(lanes, scalar):
    for got, expected in zip(lanes, scalar):
        assert torch.equal(got, expected), (got - expected).abs().max()


def problem(n, label_dtype, score_dtype=torch.float32, *, seed=0, **kwargs):
    no_ignore = label_dtype in (torch.uint8, torch.bool)
    return random_problem((n,), seed=seed, dtype=score_dtype, label_dtype=label_dtype,
                          p_ignore=0.0 if no_ignore else 0.05, **kwargs)


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
@pytest.mark.parametrize("score_dtype", SCORE_DTYPES)
def test_lanes_equal_scalar_path(score_dtype, label_dtype):
    # N not a multiple of 4 or of a block; ties put scores on bucket edges and breakpoints.
    scores, labels = problem(20003, label_dtype, score_dtype, seed=1, p_pos=0.01, ties=True)
    assert_bitwise(*both_paths(lambda: loss_and_grad(aploss_cuda.ap_loss, scores, labels)))


@pytest.mark.parametrize("case", ["init", "trained", "clusters", "few", "many", "huge", "dense"])
def test_lanes_equal_scalar_path_regimes(case):
    n = 70001
    scores, labels = problem(n, torch.int64, seed=2, p_pos=0.2 if case == "many" else 0.002)
    if case == "trained":  # most negatives pruned
        scores = torch.where(labels == 1, scores + 4.0, scores - 2.0)
    if case == "clusters":  # positives in far-apart clusters: several cluster shifts
        scores = scores + 1000.0 * (torch.arange(n) % 3)
    if case == "few":
        labels = torch.where(torch.arange(n) % 9000 == 1, 1, labels.clamp(max=0))
    if case == "huge":  # ulp(s) > delta
        scores = scores.double() * 1e-3 + 1e17
    if case == "dense":  # a few positives far out: the others' thresholds crowd a few
        # buckets, whose keys read past their record's candidates or search them
        far = torch.arange(n) % 5000 == 0
        labels = torch.where(far, 1, labels)
        scores = torch.where(far, scores * 1000.0, scores * 0.3)
    for delta in (1.0, 0.05):
        assert_bitwise(*both_paths(
            lambda: loss_and_grad(aploss_cuda.ap_loss, scores, labels, delta=delta)))


@pytest.mark.parametrize("regime", ["init", "trained"])
@pytest.mark.parametrize("grouping", groupings.NAMES + ("sorted-full-size",))
def test_lanes_equal_scalar_path_grouped(grouping, regime):
    # Blocks of one group take one frame, the others each entry's (per class, full-size);
    # in the trained regime most negatives lie below their group's first threshold. Ties
    # put scores on thresholds, where the first threshold's own key must count.
    shape = (4, 1250, 7)
    scores, labels = random_problem(shape, seed=7, p_pos=0.004, p_ignore=0.05, ties=True)
    if regime == "trained":
        scores = torch.where(labels == 1, scores + 3.0, scores - 1.0)
    if grouping == "sorted-full-size":  # contiguous runs of 25 groups: blocks of one group
        ids = torch.arange(scores.numel()).reshape(shape) * 25 // scores.numel()
    else:
        ids = groupings.group_ids(grouping, shape)
    assert_bitwise(*both_paths(
        lambda: loss_and_grad(aploss_cuda.ap_loss, scores, labels, group_ids=ids)))


@pytest.mark.parametrize("classes", [80, 3, 2048, 2049])
def test_lanes_equal_scalar_path_per_class(classes):
    # Ids with a short period (one ranking per class) take the lanes' table of frames from
    # any offset in the period (interval_lanes_cpu.h, LaneFrames), up to 2,048 classes;
    # 2,049 take each entry's frame. Two threads start their chunks mid-period.
    scores, labels = random_problem((2, 360_000 // classes, classes), seed=classes,
                                    p_pos=0.01, p_ignore=0.05, ties=True)
    ids = torch.arange(classes)
    assert_bitwise(*both_paths(
        lambda: loss_and_grad(aploss_cuda.ap_loss, scores, labels, group_ids=ids)))


def first_threshold_key(q, delta):
    """The least float32 s with s - q > -delta in float64: the first key whose window
    holds the positive q."""
    s = torch.tensor(q - delta, dtype=torch.float64).float()
    up = torch.tensor(float("inf"))
    while not s.double() - q > -delta:
        s = torch.nextafter(s, up)
    while (below := torch.nextafter(s, -up)).double() - q > -delta:
        s = below
    return s


@pytest.mark.parametrize("grouping", [None, "per-image", "sorted-full-size"])
def test_keys_on_the_first_threshold_count(grouping):
    # Negatives exactly on each group's first threshold (below its lowest positive) are the
    # first keys that count; one float32 step lower, they count nothing.
    from losses import reference

    shape = (4, 2000)
    scores, labels = random_problem(shape, seed=9, p_pos=0.01, p_ignore=0.0, ties=True)
    scores = torch.where(labels == 1, scores + 2.0, scores - 2.0)
    ids = {None: None, "per-image": torch.arange(4)[:, None],
           "sorted-full-size": torch.arange(8000).reshape(shape) // 1000}[grouping]
    flat_ids = torch.zeros(8000, dtype=torch.int64) if ids is None else ids.expand(shape).flatten()
    flat_scores, flat_labels = scores.reshape(-1), labels.reshape(-1)
    for u in flat_ids.unique().tolist():
        members = (flat_ids == u).nonzero().flatten()
        lowest = flat_scores[members][flat_labels[members] == 1].double().min().item()
        key = first_threshold_key(lowest, 1.0)
        negatives = members[flat_labels[members] == 0]
        flat_scores[negatives[:40]] = key
        flat_scores[negatives[40:60]] = torch.nextafter(key, torch.tensor(-float("inf")))
    lanes, scalar = both_paths(
        lambda: loss_and_grad(aploss_cuda.ap_loss, scores, labels, group_ids=ids))
    # Bitwise: the keys on the threshold add almost nothing (their step is ~0), so only
    # the two paths' agreement sees one of them drop those keys.
    assert_bitwise(lanes, scalar)
    assert_same_result(lanes, reference("ap", scores, labels, ids), scores.dtype)


def test_lanes_equal_scalar_path_family():
    scores, labels = problem(30001, torch.int64, seed=3, p_pos=0.01)
    targets = torch.where(labels == 1, torch.rand(labels.shape, dtype=torch.float64), 0.0)
    targets = torch.where(labels == -1, -1.0, targets).float()
    assert_bitwise(*both_paths(
        lambda: loss_and_grad(aploss_cuda.rank_sort_loss, scores, targets)))

    regression = torch.rand(int((labels == 1).sum()), dtype=torch.float64)

    def alrp():
        x = scores.detach().clone().requires_grad_(True)
        reg = regression.clone().requires_grad_(True)
        cls, loc = aploss_cuda.alrp_loss(x, labels, reg)
        (cls + loc).backward()
        return cls.detach(), loc.detach(), x.grad, reg.grad

    assert_bitwise(*both_paths(alrp))


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), float("inf")])
def test_lanes_report_the_same_error(bad):
    scores, labels = problem(5003, torch.int64, seed=4, p_pos=0.01)
    negatives = (labels == 0).nonzero().flatten()
    scores[negatives[[700, 2900]]] = bad  # the first bad negative is reported

    def message():
        with pytest.raises(ValueError) as error:
            aploss_cuda.ap_loss(scores, labels)
        return str(error.value)

    lanes, scalar = both_paths(message)
    assert lanes == scalar and str(int(negatives[700])) in lanes


def test_interleaved_rankings_keep_their_own_index():
    # The CPU passes reuse the window index of the last positives seen; another ranking
    # with as many positives in between must not lend its index to the first's backward.
    problems = [problem(20000, torch.int64, seed=seed, p_pos=0.01) for seed in (5, 6)]
    problems[1][1][:] = problems[0][1]  # same positives' positions, other scores
    alone = [loss_and_grad(aploss_cuda.ap_loss, s, y) for s, y in problems]
    inputs = [s.detach().clone().requires_grad_(True) for s, _ in problems]
    losses = [aploss_cuda.ap_loss(x, y) for x, (_, y) in zip(inputs, problems)]
    for loss in reversed(losses):  # backward of the first after the second's forward
        loss.backward()
    for x, loss, (loss_alone, grad_alone) in zip(inputs, losses, alone):
        assert torch.equal(loss.detach(), loss_alone) and torch.equal(x.grad, grad_alone)


def test_signed_zero_ties():
    # -0.0 and +0.0 positives tie (the sort keys map both to one key), as in the reference.
    from aploss_cuda.reference import ap_loss_reference, rank_sort_loss_reference

    n = 4001
    scores = torch.where(torch.arange(n) % 2 == 0, 0.0, -0.0).double()
    scores[::7] = torch.linspace(-2, 2, len(scores[::7]), dtype=torch.float64)
    labels = torch.where(torch.arange(n) % 5 == 0, 1, 0)
    loss, grad = loss_and_grad(aploss_cuda.ap_loss, scores, labels)
    ref_loss, ref_grad = ap_loss_reference(scores, labels)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    targets = torch.where(labels == 1, torch.rand(n, dtype=torch.float64) * 0.9 + 0.1, 0.0)
    loss, grad = loss_and_grad(aploss_cuda.rank_sort_loss, scores, targets)
    ref = rank_sort_loss_reference(scores, targets)
    torch.testing.assert_close(loss, ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref[3], rtol=1e-9, atol=1e-12)
