"""The CUDA kernels: against the float64 reference, the CPU kernels and each other.

Skipped without a GPU. Difference from the CPU backend, by design (csrc/cuda/*.cu): the
sorted pass 1 accumulates with float64 atomics, so its results may differ between runs in
the last bits; under torch.use_deterministic_algorithms(True) the driver replaces it by a
deterministic reduction (csrc/deterministic_pass1.cpp), bitwise reproducible.
"""

import warnings

import pytest
import torch
from helpers import (
    assert_matches_reference,
    assert_same_result,
    loss_and_grad,
    opcheck,
    random_problem,
)

import aploss_cuda

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = "cuda"
METHODS = ["sorted", "pairwise"]
SCORE_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LABEL_DTYPES = [torch.bool, torch.int8, torch.uint8, torch.int32, torch.int64, torch.float32, torch.float64]


def cuda_problem(shape, **kwargs):
    return random_problem(shape, device=DEVICE, **kwargs)


def test_cuda_kernels_are_compiled_in():
    # Fails (rather than skips) when a GPU is present but the build has no CUDA kernels.
    assert aploss_cuda.info()["cuda_kernels_usable"]


# ---- against the float64 reference ---------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("delta", [0.1, 1.0, 3.0])
@pytest.mark.parametrize("seed", range(4))
def test_random_cases_match_reference(method, interpolate, delta, seed):
    shape = [(300,), (7, 41), (3, 5, 17), (2, 3, 4, 9)][seed]
    scores, labels = cuda_problem(shape, seed=seed, p_pos=0.08 + 0.05 * seed, ties=seed % 2 == 1)
    loss, grad = assert_matches_reference(scores, labels, delta=delta, interpolate=interpolate, method=method)
    assert loss.device.type == DEVICE and grad.device.type == DEVICE


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", SCORE_DTYPES)
def test_score_dtypes_match_reference(method, dtype):
    scores, labels = cuda_problem((20, 30), seed=1, dtype=dtype, ties=True)
    assert_matches_reference(scores, labels, method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
def test_label_dtypes_match_reference(method, label_dtype):
    p_ignore = 0.0 if label_dtype in (torch.uint8, torch.bool) else 0.1  # no -1 in these
    scores, labels = cuda_problem((500,), seed=2, label_dtype=label_dtype, p_ignore=p_ignore)
    assert_matches_reference(scores, labels, method=method)
    got = loss_and_grad(scores, labels, method=method)
    expected = loss_and_grad(scores, labels.to(torch.int64), method=method)
    assert_same_result(got, expected, scores.dtype)


@pytest.mark.parametrize("method", METHODS)
def test_ties_and_window_corners(method):
    scores = torch.tensor([0.0, 1.0, 0.5]).repeat(100)[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    labels = (torch.arange(300) % 3 == 0).long() - (torch.arange(300) % 7 == 0).long()
    assert_matches_reference(scores.to(DEVICE), labels.to(DEVICE), delta=0.5, method=method)
    corners = torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5], dtype=torch.float64, device=DEVICE)
    assert_matches_reference(corners, torch.tensor([1, 0, 0, 0, 0, 1, 0], device=DEVICE), method=method)
    assert_matches_reference(torch.zeros(50, device=DEVICE), (torch.arange(50, device=DEVICE) % 5 == 0).long(), method=method)


@pytest.mark.parametrize("method", METHODS)
def test_tiny_and_empty_inputs(method):
    for shape in [(1,), (2,), (3,), (1, 1, 1), (0,), (5, 0, 3)]:
        for seed in range(3):
            scores, labels = cuda_problem(shape, seed=seed, p_pos=0.5, p_ignore=0.2)
            assert_matches_reference(scores, labels, method=method)
    loss, grad = loss_and_grad(torch.tensor(0.3, device=DEVICE), torch.tensor(1, device=DEVICE), method=method)
    assert loss.item() == 0.0 and grad.shape == () and grad.item() == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_edge_label_mixes(method):
    scores = torch.randn(64, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    cases = {
        "no positive": torch.zeros(64, dtype=torch.int64),
        "no negative": torch.ones(64, dtype=torch.int64),
        "all ignored": torch.full((64,), -1),
        "one positive": torch.nn.functional.one_hot(torch.tensor(7), 64),
        "one negative": 1 - torch.nn.functional.one_hot(torch.tensor(7), 64),
    }
    for name, labels in cases.items():
        loss, grad = assert_matches_reference(scores, labels.to(DEVICE), method=method)
        if name in ("no positive", "no negative", "all ignored"):
            assert loss.item() == 0.0, name
            assert grad.abs().sum().item() == 0.0, name


@pytest.mark.parametrize("method", METHODS)
def test_init_and_trained_regimes(method):
    # Every negative within delta of a positive (initialisation), then mostly pruned ones.
    scores, labels = cuda_problem((6000,), seed=14, p_pos=0.01, p_ignore=0.01, loc=-4.6, scale=0.5)
    assert_matches_reference(scores, labels, method=method)
    g = torch.Generator().manual_seed(15)
    labels = (torch.rand(6000, generator=g) < 0.02).long()
    scores = torch.where(labels == 1, torch.randn(6000, generator=g) + 2.0, torch.randn(6000, generator=g) * 0.5 - 4.6)
    scores[:50] = 1.5
    labels[:50] = 0
    assert_matches_reference(scores.to(DEVICE), labels.to(DEVICE), method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_finite_scores(method, dtype):
    big = 1e30
    tiny = torch.finfo(dtype).tiny / 4  # subnormal
    scores = torch.tensor([big, -big, tiny, -tiny, 0.0, 1.0, big, -big, 3 * tiny, 0.5], dtype=dtype, device=DEVICE)
    labels = torch.tensor([1, 0, 1, 0, 0, 1, 0, 1, 0, 0], device=DEVICE)
    loss, grad = assert_matches_reference(scores, labels, method=method)
    assert torch.isfinite(loss).item() and torch.isfinite(grad).all().item()


@pytest.mark.parametrize("method", METHODS)
def test_shift_invariance(method):
    scores, labels = cuda_problem((3000,), seed=13, p_pos=0.05, dtype=torch.float64, ties=True)
    base = loss_and_grad(scores, labels, method=method)
    for shift in (1000.0, -1e6, 1e9):
        assert_same_result(loss_and_grad(scores + shift, labels, method=method), base, torch.float64, rtol=1e-7)


# ---- against the other implementations -------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("interpolate", [True, False])
def test_sorted_equals_pairwise_on_cuda(seed, interpolate):
    scores, labels = cuda_problem((200000,), seed=seed, p_pos=0.01, p_ignore=0.05, loc=-4.6, scale=0.5 + seed, dtype=torch.float64)
    sorted_ = loss_and_grad(scores, labels, method="sorted", interpolate=interpolate)
    pairwise = loss_and_grad(scores, labels, method="pairwise", interpolate=interpolate)
    assert_same_result(sorted_, pairwise, torch.float64, rtol=1e-9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", SCORE_DTYPES)
def test_cuda_matches_cpu(method, dtype):
    scores, labels = cuda_problem((50000,), seed=4, dtype=dtype, p_pos=0.02, loc=-3.0, scale=1.5)
    got = loss_and_grad(scores, labels, method=method)
    expected = loss_and_grad(scores.cpu(), labels.cpu(), method=method)
    assert_same_result(got, expected, dtype)


# P around the shared-memory limits: pass 1 stages 4 (P+1) doubles (P <= ~7,250 on an
# H100), pass 2 3 (P+1) (P <= ~9,650); larger P uses the global-memory variants. 60,000
# is far past both.
@pytest.mark.parametrize("num_pos", [1, 31, 1000, 7000, 7300, 9600, 9700, 20000, 60000])
def test_positive_counts_across_shared_memory_limits(num_pos):
    n = max(4 * num_pos, 10000)
    g = torch.Generator().manual_seed(num_pos)
    labels = torch.zeros(n, dtype=torch.int8)
    labels[torch.randperm(n, generator=g)[:num_pos]] = 1
    scores = torch.randn(n, generator=g, dtype=torch.float64) - 2.0 * (labels == 0)
    got = loss_and_grad(scores.to(DEVICE), labels.to(DEVICE), method="sorted")
    expected = loss_and_grad(scores, labels, method="sorted")
    assert_same_result(got, expected, torch.float64, rtol=1e-8)
    if num_pos <= 20000:  # pairwise is O(P N)
        pairwise = loss_and_grad(scores.to(DEVICE), labels.to(DEVICE), method="pairwise")
        assert_same_result(pairwise, expected, torch.float64, rtol=1e-8)


def test_more_positives_than_the_gather_guess():
    # The gather's first buffer holds max(2^16, N / 256) positives; this has ~150,000.
    scores, labels = cuda_problem((300000,), seed=17, p_pos=0.5, ties=True, dtype=torch.float64)
    got = loss_and_grad(scores, labels, method="sorted")
    expected = loss_and_grad(scores.cpu(), labels.cpu(), method="sorted")
    assert_same_result(got, expected, torch.float64, rtol=1e-8)


def test_large_n_sorted_matches_cpu():
    n = 1 << 27
    g = torch.Generator(device=DEVICE).manual_seed(5)
    scores = torch.randn(n, device=DEVICE, generator=g) * 0.7 - 4.0
    u = torch.rand(n, device=DEVICE, generator=g)
    labels = torch.where(u < 1e-5, 1, torch.where(u < 0.05, -1, 0)).to(torch.int8)
    scores = torch.where(labels == 1, scores + 3.0, scores)
    got = loss_and_grad(scores, labels, method="sorted")
    expected = loss_and_grad(scores.cpu(), labels.cpu(), method="sorted")
    assert_same_result(got, expected, torch.float32)


def test_more_than_two_to_the_31_entries():
    # 64-bit indexing: a small problem placed across flat index 2^31, everything else
    # ignored. The loss and gradient must be those of the small problem alone.
    n = (1 << 31) + (1 << 20)
    small_scores, small_labels = random_problem((3000,), seed=9, p_pos=0.05, dtype=torch.float16)
    at = (1 << 31) - 1500
    try:
        scores = torch.zeros(n, dtype=torch.float16, device=DEVICE)
        labels = torch.full((n,), -1, dtype=torch.int8, device=DEVICE)
    except torch.cuda.OutOfMemoryError:
        pytest.skip("not enough GPU memory for 2^31 entries")
    scores[at : at + 3000] = small_scores.to(DEVICE)
    labels[at : at + 3000] = small_labels.to(torch.int8).to(DEVICE)
    labels[-1] = 0  # a pruned negative at the very end
    scores[-1] = -1000.0
    loss, grad = loss_and_grad(scores, labels, method="sorted")
    expected_loss, expected_grad = loss_and_grad(small_scores, small_labels, method="sorted")
    assert_same_result((loss, grad[at : at + 3000]), (expected_loss, expected_grad), torch.float16)
    assert grad[:at].abs().max().item() == 0.0 and grad[at + 3000 :].abs().max().item() == 0.0
    del scores, labels, grad
    torch.cuda.empty_cache()


# ---- layouts, streams, devices ---------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_views(method):
    base_scores, base_labels = cuda_problem((12, 20, 6), seed=5)
    views = {
        "transposed": lambda t: t.transpose(0, 2),
        "permuted": lambda t: t.permute(1, 2, 0),
        "sliced": lambda t: t[:, ::3, 1:],
        "expanded-row": lambda t: t[:, :1, :].expand(12, 4, 6),
    }
    for name, view in views.items():
        scores, labels = view(base_scores), view(base_labels)
        got = assert_matches_reference(scores, labels, method=method)
        assert got[1].shape == scores.shape, name
        assert_same_result(got, loss_and_grad(scores.contiguous(), labels.contiguous(), method=method), scores.dtype)
    # scores and labels laid out differently (one of them is copied)
    scores, labels = cuda_problem((30, 40), seed=6)
    assert_matches_reference(scores.t(), labels.t().contiguous(), method=method)
    assert_matches_reference(scores.t().contiguous(), labels.t(), method=method)
    # a view with a storage offset
    assert_matches_reference(base_scores[3:], base_labels[3:], method=method)


@pytest.mark.parametrize("method", METHODS)
def test_non_default_stream(method):
    scores, labels = cuda_problem((100000,), seed=7, p_pos=0.01, loc=-4.6, scale=0.5)
    expected = loss_and_grad(scores, labels, method=method)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        # Keep the side stream busy, then make the inputs on it: kernels launched on any
        # other stream would read them before they exist.
        torch.cuda._sleep(50_000_000)
        s2 = scores * 1.0
        l2 = labels.clone()
        got = loss_and_grad(s2, l2, method=method)
    stream.synchronize()
    assert_same_result(got, expected, scores.dtype)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("method", METHODS)
def test_second_device(method):
    scores, labels = random_problem((20000,), seed=8, p_pos=0.02, dtype=torch.float64)
    expected = loss_and_grad(scores, labels, method=method)
    torch.cuda.set_device(0)
    got = loss_and_grad(scores.to("cuda:1"), labels.to("cuda:1"), method=method)
    assert got[0].device == torch.device("cuda:1") and got[1].device == torch.device("cuda:1")
    assert torch.cuda.current_device() == 0
    assert_same_result(got, expected, torch.float64, rtol=1e-9)


# ---- properties of the result ----------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("interpolate", [True, False])
def test_balance_invariant(method, interpolate):
    scores, labels = cuda_problem((4000,), seed=11, p_pos=0.05, loc=-4.6, scale=0.5, dtype=torch.float64)
    loss, grad = loss_and_grad(scores, labels, method=method, interpolate=interpolate)
    assert grad[labels == 0].sum().item() == pytest.approx(loss.item(), rel=1e-10)
    assert grad[labels == 1].sum().item() == pytest.approx(-loss.item(), rel=1e-10)
    assert grad[labels == -1].abs().sum().item() == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_grad_output_scaling(method):
    scores, labels = cuda_problem((2000,), seed=12, dtype=torch.float64)
    _, grad = loss_and_grad(scores, labels, method=method)
    x = scores.clone().requires_grad_(True)
    (3 * aploss_cuda.ap_loss(x, labels, method=method)).backward()
    torch.testing.assert_close(x.grad, 3 * grad, rtol=1e-12, atol=0)


# ---- errors and non-finite scores --------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_negative_raises(method, value):
    # Found by the gather, inside the call's one host sync, as on the CPU.
    scores, labels = cuda_problem((2000,), seed=1, p_pos=0.1)
    index = int((labels == 0).nonzero()[3])
    scores[index] = value
    with pytest.raises(ValueError, match=rf"finite.*index {index}"):
        aploss_cuda.ap_loss(scores, labels, method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_positive_raises(method, value):
    scores, labels = cuda_problem((2000,), seed=1, p_pos=0.1)
    index = int((labels == 1).nonzero()[3])
    scores[index] = value
    with pytest.raises(ValueError, match=rf"finite.*index {index}"):
        aploss_cuda.ap_loss(scores, labels, method=method)


def test_non_finite_ignored_score_is_not_read():
    scores, labels = cuda_problem((2000,), seed=2, p_ignore=0.2)
    index = int((labels == -1).nonzero()[0])
    expected = loss_and_grad(scores, labels)
    scores[index] = float("nan")
    loss, grad = loss_and_grad(scores, labels)
    assert_same_result((loss, grad), expected, scores.dtype)
    assert grad[index].item() == 0.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "labels, bad, index",
    [
        ([0, 1, 2, 0, 3], "2", 2),
        ([0.0, 1.0, 0.5, -1.0], "0.5", 2),
        (torch.tensor([0, -2, 1], dtype=torch.int8), "-2", 1),
        (torch.tensor([0, 1, 255], dtype=torch.uint8), "255", 2),
        ([0.0, float("nan"), 1.0], "nan", 1),
    ],
)
def test_invalid_labels_raise(method, labels, bad, index):
    labels = torch.as_tensor(labels).to(DEVICE)
    scores = torch.randn(labels.shape, device=DEVICE)
    with pytest.raises(ValueError, match=rf"found {bad}\b.*index {index}"):
        aploss_cuda.ap_loss(scores, labels, method=method)


def test_first_invalid_label_among_many_is_reported():
    labels = torch.zeros(1 << 20, dtype=torch.int32, device=DEVICE)
    labels[777_777] = 5
    labels[900_000:] = 7
    with pytest.raises(ValueError, match=r"found 5\b.*index 777777"):
        aploss_cuda.ap_loss(torch.randn(1 << 20, device=DEVICE), labels)


# ---- operator registration -------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_forward(method, dtype):
    scores, labels = cuda_problem((6, 50), seed=0, dtype=dtype)
    for requires_grad in (False, True):
        args = (scores.clone().requires_grad_(requires_grad), labels, 1.0, True, method)
        opcheck(torch.ops.aploss.ap_loss_forward.default, args)


@pytest.mark.parametrize("method", METHODS)
def test_opcheck_backward(method):
    scores, labels = cuda_problem((6, 50), seed=1)
    _, state = torch.ops.aploss.ap_loss_forward(scores, labels, 1.0, True, method)
    args = (torch.tensor(2.0, device=DEVICE), scores, labels, state, 1.0, method)
    opcheck(torch.ops.aploss.ap_loss_backward.default, args)


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(dynamic):
    torch._dynamo.reset()

    def step(scores, labels):
        return aploss_cuda.ap_loss(scores.sigmoid().logit(), labels, delta=0.5) * 2.0

    compiled = torch.compile(step, fullgraph=True, dynamic=dynamic)
    for seed, shape in enumerate([(8, 30), (8, 30), (5, 44)]):
        scores, labels = cuda_problem(shape, seed=seed, dtype=torch.float64)
        x_eager = scores.clone().requires_grad_(True)
        x_comp = scores.clone().requires_grad_(True)
        eager = step(x_eager, labels)
        got = compiled(x_comp, labels)
        eager.backward()
        got.backward()
        torch.testing.assert_close(got, eager, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x_comp.grad, x_eager.grad, rtol=1e-10, atol=1e-14)


def test_one_host_sync_in_forward_none_in_backward():
    # The design: the gather's single device-to-host copy is the forward's only sync.
    scores, labels = cuda_problem((100000,), seed=3, p_pos=0.01)
    x = scores.clone().requires_grad_(True)
    aploss_cuda.ap_loss(x, labels)  # warm-up (lazy initialisation may sync)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    try:
        torch.cuda.set_sync_debug_mode("warn")
        with pytest.warns(UserWarning) as forward_warnings:
            loss = aploss_cuda.ap_loss(x, labels)
        syncs = [w for w in forward_warnings if "synchroniz" in str(w.message)]
        assert len(syncs) == 1, [str(w.message) for w in syncs]
        with warnings.catch_warnings(record=True) as backward_warnings:
            warnings.simplefilter("always")
            loss.backward()
        syncs = [w for w in backward_warnings if "synchroniz" in str(w.message)]
        assert not syncs, [str(w.message) for w in syncs]
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@pytest.mark.parametrize("grouped", [False, True])
def test_deterministic_mode(grouped):
    scores, labels = cuda_problem((300000,), seed=3, p_pos=0.002, loc=-4.6, scale=0.5)
    group_ids = torch.arange(6, device=DEVICE).repeat_interleave(50000) if grouped else None
    methods = ["sorted"] if grouped else ["sorted", "pairwise"]
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for method in methods:
            runs = [
                loss_and_grad(scores, labels, method=method, group_ids=group_ids) for _ in range(3)
            ]
            for loss, grad in runs[1:]:
                assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1]), method
    finally:
        torch.use_deterministic_algorithms(previous)
    # and the deterministic reduction equals the atomics to rounding
    fast = loss_and_grad(scores, labels, method="sorted", group_ids=group_ids)
    assert_same_result(runs[0], fast, scores.dtype)


@pytest.mark.parametrize("grouped", [False, True])
def test_deterministic_pass1_equals_atomics(grouped):
    from test_deterministic import pass1_pair

    atomics, deterministic = pass1_pair(DEVICE, grouped)
    torch.testing.assert_close(deterministic, atomics, rtol=1e-12, atol=1e-9)


# ---- grouped rankings (group_ids) -----------------------------------------------------------


@pytest.mark.parametrize("layout", ["per-image", "per-class", "random", "one"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grouped_cuda_matches_cpu(layout, dtype):
    scores, labels = cuda_problem((6, 4000, 5), seed=11, p_pos=0.01, dtype=dtype)
    group_ids = {
        "per-image": torch.arange(6, device=DEVICE)[:, None, None],
        "per-class": torch.arange(5, device=DEVICE) * 1000,
        "random": torch.randint(0, 40, (6, 4000, 5), device=DEVICE) * (2**40),
        "one": torch.zeros((), dtype=torch.int64, device=DEVICE),
    }[layout]
    got = loss_and_grad(scores, labels, group_ids=group_ids)
    expected = loss_and_grad(scores.cpu(), labels.cpu(), group_ids=group_ids.cpu())
    assert_same_result(got, expected, dtype)


def test_grouped_non_finite_negative_raises():
    scores, labels = cuda_problem((3, 2000), seed=12, p_pos=0.05)
    index = int((labels.view(-1) == 0).nonzero()[5])
    scores.view(-1)[index] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        aploss_cuda.ap_loss(scores, labels, group_ids=torch.arange(3, device=DEVICE)[:, None])
