"""Shared test utilities: random AP-loss problems and comparison with the reference."""

import contextlib

import pytest
import torch

import aploss_cuda
from aploss_cuda import _extension
from aploss_cuda._contract import LABEL_DTYPES, SCORE_DTYPES  # noqa: F401  (the tests' lists)
from aploss_cuda.reference import ap_loss_reference


@contextlib.contextmanager
def scalar_path():
    """Inside: the CPU passes compute every entry with the scalar functions, not the lanes."""
    _extension._C._set_cpu_vector_lanes(False)
    try:
        yield
    finally:
        _extension._C._set_cpu_vector_lanes(True)


# The methods that run kernels ("auto" picks one of them).
KERNEL_METHODS = ("sorted", "pairwise")

# Per score dtype: tolerance of loss and gradient against the float64 reference. The
# kernels accumulate in float64 and round on output; the sorted pass 2 evaluates each
# gradient in the scores' key type (float32 for 32-bit and narrower scores) from float64
# terms without cancellation, a few float32 ulps. These are output roundings.
TOLERANCE = {
    torch.float64: dict(rtol=1e-9, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-7),
    torch.float16: dict(rtol=2e-3, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-4),
}


def random_problem(
    shape,
    *,
    seed=0,
    dtype=torch.float32,
    label_dtype=torch.int64,
    p_pos=0.1,
    p_ignore=0.1,
    ties=False,
    loc=0.0,
    scale=1.0,
    device="cpu",
):
    """Scores ~ N(loc, scale) (rounded to a coarse grid with `ties`), labels drawn
    independently: 1 with p_pos, -1 with p_ignore, else 0."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(shape, generator=g, dtype=torch.float64) * scale + loc
    if ties:
        scores = (scores * 4).round() / 4
    u = torch.rand(shape, generator=g)
    labels = torch.zeros(shape, dtype=torch.int64)
    labels[u < p_pos] = 1
    labels[(u >= p_pos) & (u < p_pos + p_ignore)] = -1
    if label_dtype == torch.bool:
        labels = labels == 1  # bool labels cannot say "ignored"
    else:
        labels = labels.to(label_dtype)
    return scores.to(dtype).to(device), labels.to(device)


def loss_and_grad(scores, labels, **kwargs):
    """Our loss and gradient (backward of the loss with grad_output 1)."""
    x = scores.detach().clone().requires_grad_(True)
    loss = aploss_cuda.ap_loss(x, labels, **kwargs)
    loss.backward()
    return loss.detach(), x.grad


def assert_same_result(got, expected, dtype, *, rtol=None):
    """(loss, grad) pairs, compared on the CPU in float64 with the output dtype's tolerance;
    the gradient's tolerance is scaled to its largest entry (entries are sums of many terms)."""
    tol = dict(TOLERANCE[dtype])
    if rtol is not None:
        tol["rtol"] = rtol
    loss, grad = (t.detach().double().cpu() for t in got)
    ref_loss, ref_grad = (t.detach().double().cpu() for t in expected)
    torch.testing.assert_close(loss, ref_loss, **tol)
    scale = ref_grad.abs().max().item() if ref_grad.numel() else 0.0
    torch.testing.assert_close(grad, ref_grad, rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * scale)


def assert_matches_reference(scores, labels, *, delta=1.0, interpolate=True, method="auto"):
    loss, grad = loss_and_grad(scores, labels, delta=delta, interpolate=interpolate, method=method)
    assert loss.dtype == scores.dtype and loss.dim() == 0
    assert grad.dtype == scores.dtype and grad.shape == scores.shape
    expected = ap_loss_reference(scores, labels, delta=delta, interpolate=interpolate)
    assert_same_result((loss, grad), expected, scores.dtype)
    return loss, grad


def opcheck(op, args, **kwargs):
    """torch.library.opcheck, skipped with the reason where torch's test utilities that it
    imports cannot load (they need the expecttest package)."""
    try:
        import torch.testing._internal.optests  # noqa: F401
    except ModuleNotFoundError as e:
        pytest.skip(f"torch.library.opcheck needs the {e.name} package, not installed")
    torch.library.opcheck(op, args, **kwargs)
