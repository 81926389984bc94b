"""Inputs a hostile user would try, on every public entry point: the operators' internal
tensors broken one at a time (tests/operator_fuzz.py, in a child process), finite scores
of any magnitude, delta at the ends of float64, torch.func transforms and forward-mode AD,
unsigned group ids, the function named in every error, sparse and nested tensors
(docs/input_contract.md)."""

import math
import os
import re
import subprocess
import sys

import operators
import pytest
import torch
from devices import TARGETS
from helpers import TOLERANCE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aploss_cuda
from aploss_cuda.reference import (
    alrp_loss_reference,
    ap_loss_reference,
    rank_sort_loss_reference,
    step,
)

HERE = os.path.dirname(os.path.abspath(__file__))
LOSSES = ("ap_loss", "rank_sort_loss", "alrp_loss")


# ---- the operators, broken one input at a time -----------------------------------------


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_operators_refuse_broken_internal_tensors(target):
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "operator_fuzz.py"), target.name],
        capture_output=True, text=True, timeout=1200,
    )
    lines = proc.stdout.splitlines()
    started = [line[len("start "):] for line in lines if line.startswith("start ")]
    outcomes = {}
    for line in lines:
        for kind in ("raised", "returned"):
            if line.startswith(kind + " "):
                name, _, detail = line[len(kind) + 1:].partition(" | ")
                outcomes[name] = (kind, detail)
    problems = []
    for entry in started:
        name, _, expectation = entry.rpartition(" | ")
        if name not in outcomes:
            problems.append(f"{name}: the process died (exit {proc.returncode})\n{proc.stderr[-3000:]}")
            continue
        kind, detail = outcomes[name]
        if expectation == "valid" and kind != "returned":
            problems.append(f"{name}: a valid call raised {detail}")
        if expectation == "broken" and kind == "returned":
            problems.append(f"{name}: returned without an error")
        if expectation == "unread" and kind == "returned" and detail != "same":
            problems.append(f"{name}: returned a gradient different from the valid call's")
        if expectation == "finite" and kind == "returned" and detail not in ("same", "finite"):
            problems.append(f"{name}: returned a non-finite gradient")
        if expectation != "valid" and kind == "raised" and not detail.startswith(
                ("TypeError", "ValueError")):
            problems.append(f"{name}: raised {detail}, not a TypeError or ValueError")
    assert len(started) > 60 and "finished" in lines, proc.stderr[-3000:]
    assert not problems, "\n".join(problems)


def test_broken_offsets_name_the_operator_and_the_rule():
    s = torch.randn(40)
    labels = (torch.arange(40) % 7 == 0).long()
    outputs = operators.forward("ap", s, labels, torch.arange(40) % 3)
    kept = operators.saved("ap", outputs)
    kept.offsets[-1] = 10**9
    name = re.escape(operators.backward_operator()._schema.name)  # e.g. aploss::loss_backward
    with pytest.raises(ValueError, match=rf"^{name}: offsets must end at the number of "
                                         r"positives, 6"):
        args = operators.backward_args("ap", outputs, torch.tensor(1.0), s, labels, grouped=True)
        operators.backward_operator()(*args)


# ---- finite scores of any magnitude -----------------------------------------------------

# The largest finite score of each dtype and whether the emulated device compiles it.
LARGEST = {torch.float32: 1.8e38, torch.float64: 9e307, torch.bfloat16: 3.3e38,
           torch.float16: 65504.0}


def losses_and_grads(name, scores, labels, delta, method="auto"):
    """(loss, grad) of one loss; rank_sort_loss's targets are 1 at the positives."""
    x = scores.detach().clone().requires_grad_(True)
    if name == "ap_loss":
        loss = aploss_cuda.ap_loss(x, labels, delta=delta, method=method)
    elif name == "rank_sort_loss":
        loss = aploss_cuda.rank_sort_loss(x, labels.to(scores.dtype), delta=delta)
    else:
        regression = torch.linspace(0.1, 0.9, int((labels == 1).sum())).to(scores.device)
        loss = aploss_cuda.alrp_loss(x, labels, regression, delta=delta)[0]
    loss.backward()
    return loss.detach(), x.grad


def reference(name, scores, labels, delta):
    s, y = scores.double().cpu(), labels.cpu()
    if name == "ap_loss":
        return ap_loss_reference(s, y, delta=delta)
    if name == "rank_sort_loss":
        loss, _, _, grad = rank_sort_loss_reference(s, y.double(), delta=delta)
        return loss, grad
    regression = torch.linspace(0.1, 0.9, int((y == 1).sum())).double()
    loss, _, grad = alrp_loss_reference(s, y, regression, delta=delta)
    return loss, grad


def assert_close_to(got, expected, dtype):
    tol = TOLERANCE[dtype]
    loss, grad = (t.double().cpu() for t in got)
    assert torch.isfinite(loss) and torch.isfinite(grad).all(), (loss, grad)
    torch.testing.assert_close(loss, expected[0].double(), **tol)
    scale = expected[1].abs().max().item()
    torch.testing.assert_close(grad, expected[1].double(), rtol=tol["rtol"],
                               atol=tol["atol"] + tol["rtol"] * scale)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("target,dtype", [(t, d) for t in TARGETS for d in LARGEST
                                          if t.compiles(d)], ids=str)
@pytest.mark.parametrize("order", [1, -1], ids=["positive below", "positive above"])
def test_far_apart_finite_scores(target, dtype, name, order):
    big = LARGEST[dtype]
    scores = torch.tensor([-big, big, 0.5, -big / 2], dtype=dtype) * order
    labels = torch.tensor([1, 0, 0, 1])
    with target.running():
        got = losses_and_grads(name, target.put(scores), target.put(labels), 1.0)
    assert_close_to(got, reference(name, scores, labels, 1.0), dtype)


def test_far_apart_scores_match_the_pairwise_method():
    scores = torch.tensor([-1.8e38, 1.8e38], requires_grad=True)
    aploss_cuda.ap_loss(scores, torch.tensor([1, 0])).backward()
    assert scores.grad.tolist() == [-0.5, 0.5]


@st.composite
def extreme_problems(draw, dtypes):
    dtype = draw(st.sampled_from(dtypes))
    n = draw(st.integers(2, 10))
    largest = torch.finfo(dtype).max
    values = []
    for _ in range(n):
        kind = draw(st.sampled_from(["max", "half", "uniform", "tiny", "normal"]))
        sign = draw(st.sampled_from([-1.0, 1.0]))
        magnitude = {"max": largest, "half": largest / 2,
                     "uniform": draw(st.floats(0, 1)) * largest,
                     "tiny": torch.finfo(dtype).tiny, "normal": draw(st.floats(0, 3))}[kind]
        values.append(sign * magnitude)
    labels = draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n))
    labels[draw(st.integers(0, n - 1))] = 1
    delta = draw(st.sampled_from([1.0, 0.5, 1e-3, 1e30, 1e300]))
    return torch.tensor(values, dtype=torch.float64).to(dtype), torch.tensor(labels), delta


EXTREME = settings(max_examples=60, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("name", LOSSES)
def test_any_finite_magnitude_matches_the_reference(target, name):
    dtypes = [d for d in LARGEST if target.compiles(d)]

    @EXTREME
    @given(problem=extreme_problems(dtypes))
    def check(problem):
        scores, labels, delta = problem
        with target.running():
            got = losses_and_grads(name, target.put(scores), target.put(labels), delta)
        assert_close_to(got, reference(name, scores, labels, delta), scores.dtype)
        if name == "ap_loss":  # and the pairwise method, which never forms a far difference
            with target.running():
                pairwise = losses_and_grads(name, target.put(scores), target.put(labels), delta,
                                            method="pairwise")
            assert_close_to(pairwise, reference(name, scores, labels, delta), scores.dtype)

    check()


# ---- delta at the ends of float64 -------------------------------------------------------


def call_with_delta(name, delta):
    s, y = torch.tensor([0.5, 0.1, 0.2, 0.0]), torch.tensor([1, 0, 0, 1])
    if name == "ap_loss":
        return aploss_cuda.ap_loss(s, y, delta=delta)
    if name == "rank_sort_loss":
        return aploss_cuda.rank_sort_loss(s, y.float(), delta=delta)
    if name == "alrp_loss":
        return aploss_cuda.alrp_loss(s, y, torch.ones(2), delta=delta)
    return {"APLoss": aploss_cuda.APLoss, "RankSortLoss": aploss_cuda.RankSortLoss,
            "ALRPLoss": aploss_cuda.ALRPLoss}[name](delta=delta)


@pytest.mark.parametrize("name", LOSSES + ("APLoss", "RankSortLoss", "ALRPLoss"))
@pytest.mark.parametrize("delta", [2e-309, 1e-310, 5e-324, 2**1100, 1e309])
def test_delta_outside_float64s_normal_range_is_refused(name, delta):
    with pytest.raises(ValueError, match=rf"^{name}: delta must be finite and >= 2\.2250738585072014e-308"):
        call_with_delta(name, delta)


def test_delta_is_checked_by_the_operators_too():
    s, y = torch.tensor([0.5, 0.1]), torch.tensor([1, 0])
    with pytest.raises(ValueError, match=r"^ap_loss: delta must be finite and >= 2\.22"):
        operators.forward("ap", s, y, None, 1e-310)
    with pytest.raises(ValueError, match=r"^rank_sort_loss: delta"):
        operators.forward("rank_sort", s, y.float(), None, 1e-310)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("delta", [2.2250738585072014e-308, 1e-300, 1e300, 1.7976931348623157e308])
def test_delta_at_the_ends_of_its_range(target, name, delta):
    scores = torch.tensor([0.5, 0.1, 0.2, 0.0, 1e300, -1e300], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 1, 0, 1])
    with target.running():
        got = losses_and_grads(name, target.put(scores), target.put(labels), delta)
    assert_close_to(got, reference(name, scores, labels, delta), torch.float64)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("grouped", [False, True], ids=["one ranking", "grouped"])
@pytest.mark.parametrize("name", LOSSES)
def test_delta_below_float32s_normal_range_needs_float64_scores(target, name, grouped):
    """float32 and 16-bit scores are compared in float32, where 1 / delta must be finite."""
    labels = torch.tensor([1, 0, 0, 1, 0, 1])
    scores = torch.tensor([0.5, 0.1, 0.2, 0.0, 1e-39, -1e-39], dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 1, 0, 1]) if grouped else None
    with target.running():
        for dtype in (torch.float32, torch.float16):
            if not target.compiles(dtype):
                continue
            x = target.put(scores.to(dtype)).requires_grad_(True)
            with pytest.raises(ValueError, match=rf"^{name}: delta must be >= 1\.1754943508222875e-38"
                                                 rf" \(the smallest normal float32\) for "):
                loss_call(name, x, target.put(labels), 1e-39, target.put(ids) if grouped else None)
        got = losses_and_grads(name, target.put(scores), target.put(labels), 1e-39)
    assert_close_to(got, reference(name, scores, labels, 1e-39), torch.float64)


def loss_call(name, scores, labels, delta, group_ids=None):
    if name == "ap_loss":
        return aploss_cuda.ap_loss(scores, labels, delta=delta, group_ids=group_ids)
    if name == "rank_sort_loss":
        return aploss_cuda.rank_sort_loss(scores, labels.to(scores.dtype), delta=delta,
                                          group_ids=group_ids)
    regression = torch.linspace(0.1, 0.9, int((labels == 1).sum())).to(scores.device)
    return aploss_cuda.alrp_loss(scores, labels, regression, delta=delta, group_ids=group_ids)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("delta,scale", [(1.1754943508222875e-38, 1.0), (1e-30, 1e12)],
                         ids=["smallest float32 delta", "gradient scaled by 1e12"])
def test_steep_windows_near_zero(target, name, delta, scale):
    """Windows a few float32 ulps wide near 0 (scores at the scale of delta), where the
    gradient's slope over the window overflows float32: finite, and the reference's."""
    scores = torch.tensor([0.0, 0.3, -0.2, 0.1, 0.5, -0.7, 0.0, 0.25], dtype=torch.float64) * delta
    scores = scores.float().double()  # the float32 values, for the reference too
    labels = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0])
    with target.running():
        x = target.put(scores.float()).requires_grad_(True)
        loss = loss_call(name, x, target.put(labels), delta)
        loss = loss[0] if isinstance(loss, tuple) else loss
        (loss * scale).backward()
    expected_loss, expected_grad = reference(name, scores, labels, delta)
    assert_close_to((loss.detach(), x.grad / scale), (expected_loss, expected_grad), torch.float32)


def test_reference_step_does_not_overflow_two_delta():
    assert step(torch.tensor(1e308, dtype=torch.float64), 1e308).item() == 1.0
    assert step(torch.tensor(-1e308, dtype=torch.float64), 1e308).item() == 0.0
    loss, _ = ap_loss_reference(torch.tensor([0.0, 1e308], dtype=torch.float64),
                                torch.tensor([1, 0]), delta=1e308)
    assert loss.item() == 0.5  # H(1e308) = 1: the negative ranks fully above the positive


# ---- torch.func transforms and forward-mode AD ------------------------------------------


def loss_fn(name, labels, group_ids=None):
    if name == "ap_loss":
        return lambda s: aploss_cuda.ap_loss(s, labels, group_ids=group_ids)
    if name == "rank_sort_loss":
        targets = torch.where(labels == 1, torch.linspace(0.2, 1.0, labels.numel()),
                              labels.float())
        return lambda s: aploss_cuda.rank_sort_loss(s, targets, group_ids=group_ids)
    regression = torch.linspace(0.1, 0.9, int((labels == 1).sum()))
    return lambda s: aploss_cuda.alrp_loss(s, labels, regression, group_ids=group_ids)[0]


def problem_for_transforms():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(60, generator=g)
    labels = (torch.rand(60, generator=g) < 0.2).long()
    labels[0] = 1
    return scores, labels


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("name", LOSSES)
def test_func_grad_vjp_and_jacrev_give_the_backward_gradient(name, grouped):
    scores, labels = problem_for_transforms()
    f = loss_fn(name, labels, torch.arange(60) % 4 if grouped else None)
    x = scores.clone().requires_grad_(True)
    f(x).backward()
    assert torch.equal(torch.func.grad(f)(scores), x.grad)
    loss, vjp = torch.func.vjp(f, scores)
    assert torch.equal(loss, f(scores))
    assert torch.equal(vjp(torch.tensor(2.0))[0], 2 * x.grad)
    assert torch.equal(torch.func.jacrev(f)(scores), x.grad)


@pytest.mark.parametrize("name", LOSSES)
def test_grad_of_grad_is_refused(name):
    scores, labels = problem_for_transforms()
    f = loss_fn(name, labels)
    with pytest.raises(RuntimeError, match="do not support double backward"):
        torch.func.grad(lambda s: torch.func.grad(f)(s).pow(2).sum())(scores)


@pytest.mark.parametrize("name", LOSSES)
def test_forward_mode_is_refused(name):
    scores, labels = problem_for_transforms()
    f = loss_fn(name, labels)
    with pytest.raises(RuntimeError, match="no forward-mode derivative.*backward"):
        torch.func.jvp(f, (scores,), (torch.ones_like(scores),))
    with pytest.raises(RuntimeError, match="no forward-mode derivative"):
        torch.func.jacfwd(f)(scores)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level(), pytest.raises(RuntimeError, match="no forward-mode derivative"):
        f(fwAD.make_dual(scores, torch.ones_like(scores)))
    with fwAD.dual_level():  # a dual level without a tangent on the scores is fine
        assert torch.equal(f(scores), f(scores.clone()))


@pytest.mark.parametrize("name", LOSSES)
def test_vmap_is_refused_under_its_name(name):
    scores, labels = problem_for_transforms()
    f = loss_fn(name, labels[:20])
    with pytest.raises(RuntimeError, match=rf"{name} does not support torch.vmap.*group_ids"):
        torch.func.vmap(f)(scores.view(3, 20))


# ---- unsigned group ids ----------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_unsigned_group_ids(target, dtype):
    scores, labels = problem_for_transforms()
    ids = torch.arange(60) % 5 * 1000
    with target.running():
        expected = losses_and_grads_grouped(target, scores, labels, ids)
        got = losses_and_grads_grouped(target, scores, labels, ids.to(dtype))
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        if dtype == torch.uint64:  # ids from 2^63 on: groups like any other (numbered anew)
            huge = (ids.view(torch.int64) | (-2**63)).view(torch.uint64)
            got = losses_and_grads_grouped(target, scores, labels, huge)
            torch.testing.assert_close(got, expected)


def losses_and_grads_grouped(target, scores, labels, ids):
    x = target.put(scores).requires_grad_(True)
    loss = aploss_cuda.ap_loss(x, target.put(labels), group_ids=target.put(ids))
    loss.backward()
    return loss.detach(), x.grad


# ---- each error names the function the user called, and the exact value ------------------


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("name", LOSSES)
def test_errors_name_the_called_function(target, name):
    scores = torch.tensor([0.5, 0.1, 0.2, 0.0])
    with target.running():
        def call(s, y, ids=None):
            s, y = target.put(s), target.put(y)
            if name == "ap_loss":
                return aploss_cuda.ap_loss(s, y, group_ids=target.put(ids))
            if name == "rank_sort_loss":
                return aploss_cuda.rank_sort_loss(s, y.float(), group_ids=target.put(ids))
            return aploss_cuda.alrp_loss(s, y, target.put(torch.ones(1)), group_ids=target.put(ids))

        bad_labels = torch.tensor([1, 0, 2 if name != "rank_sort_loss" else 0, 0])
        if name == "rank_sort_loss":
            bad_labels = torch.tensor([1.5, 0.0, 0.0, 0.0])
        with pytest.raises(ValueError, match=rf"^{name}: (labels|targets) must .*found "
                                             rf"{'1.5' if name == 'rank_sort_loss' else '2'} at "
                                             rf"flat index {0 if name == 'rank_sort_loss' else 2}"):
            call(scores, bad_labels)
        labels = torch.tensor([1, 0, 0, 0])
        with pytest.raises(ValueError, match=rf"^{name}: scores must be finite; found nan at "
                                             r"flat index 1"):
            call(torch.tensor([0.5, math.nan, 0.2, 0.0]), labels)
        with pytest.raises(ValueError, match=rf"^{name}: group_ids must be >= 0, found -2"):
            call(scores, labels, torch.tensor([0, -2, 1, 1]))


def test_a_float_label_is_printed_exactly():
    with pytest.raises(ValueError, match=r"found 1\.0000001192092896 at flat index 0"):
        aploss_cuda.ap_loss(torch.tensor([0.5, 0.1]), torch.tensor([1.0000001, 0.0]))
    with pytest.raises(ValueError, match=r"^rank_sort_loss: targets .* found 1\.0000001192092896"):
        aploss_cuda.rank_sort_loss(torch.tensor([0.5, 0.1]), torch.tensor([1.0000001, 0.0]))
    with pytest.raises(ValueError, match=r"^alrp_loss: regression_losses must be finite and >= 0; "
                                         r"found -1e-30 at index 1"):
        aploss_cuda.alrp_loss(torch.tensor([0.5, 0.1, 0.3]), torch.tensor([1, 1, 0]),
                              torch.tensor([0.5, -1e-30], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"found 9007199254740993 at flat index 1"):
        aploss_cuda.ap_loss(torch.tensor([0.5, 0.1]), torch.tensor([1, 2**53 + 1]))


# ---- sparse and nested tensors ----------------------------------------------------------


def layouts():
    dense = torch.tensor([[0.5, 0.1], [0.2, 0.0]])
    return {
        "sparse_coo": (dense.to_sparse(), "torch.sparse_coo"),
        "sparse_csr": (dense.to_sparse_csr(), "torch.sparse_csr"),
        "nested": (torch.nested.nested_tensor([dense[0], dense[1]]), "nested tensor"),
    }


@pytest.mark.parametrize("layout", ["sparse_coo", "sparse_csr", "nested"])
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("argument", ["scores", "labels", "group_ids"])
def test_sparse_and_nested_tensors_are_refused(name, layout, argument):
    odd, what = layouts()[layout]
    scores = torch.tensor([[0.5, 0.1], [0.2, 0.0]])
    labels = torch.tensor([[1, 0], [0, 1]])
    targets = labels.float()
    kwargs = {}
    if argument == "scores":
        scores = odd
    elif argument == "labels":
        labels = odd.long() if layout != "nested" else torch.nested.nested_tensor(
            [labels[0], labels[1]])
        targets = odd
    else:
        kwargs["group_ids"] = odd.long() if layout != "nested" else torch.nested.nested_tensor(
            [labels[0], labels[1]])
    wanted = {"ap_loss": "labels", "rank_sort_loss": "targets", "alrp_loss": "labels"}
    named = wanted[name] if argument == "labels" else argument
    with pytest.raises(TypeError, match=rf"^{name}: {named} must be a dense \(strided\) tensor, "
                                        rf"got .*{what}"):
        if name == "ap_loss":
            aploss_cuda.ap_loss(scores, labels, **kwargs)
        elif name == "rank_sort_loss":
            aploss_cuda.rank_sort_loss(scores, targets, **kwargs)
        else:
            aploss_cuda.alrp_loss(scores, labels, torch.ones(2), **kwargs)


def test_sparse_regression_losses_are_refused():
    with pytest.raises(TypeError, match=r"^alrp_loss: regression_losses must be a dense"):
        aploss_cuda.alrp_loss(torch.tensor([0.5, 0.1]), torch.tensor([1, 0]),
                              torch.tensor([0.3]).to_sparse())
