"""Measurement machinery for benchmarks/run.py: inputs, implementations, timing,
peak memory, accuracy and the cost models used to skip (and extrapolate) the slow
baselines."""

import ctypes
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import aploss_cuda
from aploss_cuda.reference import ap_loss_reference

from baselines import FOCAL_SOURCE, dense_vectorized, focal_loss, per_positive_loop

DELTA = 1.0
INIT_MEAN, INIT_STD = -4.6, 0.5  # logit(0.01) = -4.595: RetinaNet's prior-initialised bias
POS_MEAN, POS_STD = 2.0, 1.0

REGIMES = {
    "init": (
        f"every score ~ N({INIT_MEAN}, {INIT_STD}) (positives, negatives and ignored alike): "
        "the network at initialisation; every negative lies within delta = 1 of some "
        "positive, so nothing is pruned (the worst case)"
    ),
    "trained": (
        f"positives ~ N({POS_MEAN}, {POS_STD}), negatives and ignored ~ N({INIT_MEAN}, "
        f"{INIT_STD}): a partly trained network; only negatives above "
        "min(positive score) - delta can contribute, a tiny fraction (reported per point "
        "as 'relevant')"
    ),
}


# --------------------------------------------------------------------------- inputs


def make_inputs(n, p, regime, *, score_dtype, label_dtype, ignore_frac, device, seed):
    """scores, labels (flat, length n) with exactly p positives at random positions and
    about ignore_frac ignored (-1) entries (none for bool/uint8 labels)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    if p > n:
        raise ValueError(f"P = {p} positives do not fit in N = {n} entries")
    scores = torch.randn(n, generator=gen, device=device, dtype=torch.float32)
    scores.mul_(INIT_STD).add_(INIT_MEAN)
    # p distinct random positions without an N-sized permutation when p << n
    idx = torch.unique(torch.randint(n, (int(p * 1.25) + 16,), generator=gen, device=device))
    if idx.numel() >= p:
        idx = idx[torch.randperm(idx.numel(), generator=gen, device=device)[:p]]
    else:
        idx = torch.randperm(n, generator=gen, device=device)[:p]
    labels = torch.zeros(n, dtype=torch.int64 if label_dtype in (torch.bool, torch.uint8) else label_dtype,
                         device=device)
    if ignore_frac > 0 and label_dtype not in (torch.bool, torch.uint8):
        ign = torch.rand(n, generator=gen, device=device) < ignore_frac
        labels.masked_fill_(ign, -1)
        del ign
    labels[idx] = 1
    if label_dtype in (torch.bool, torch.uint8):
        labels = labels.to(label_dtype)
    if regime == "trained":
        scores[idx] = torch.randn(p, generator=gen, device=device) * POS_STD + POS_MEAN
    elif regime != "init":
        raise ValueError(f"unknown regime {regime!r}")
    return scores.to(score_dtype), labels


def relevant_fraction(scores, labels):
    """Fraction of the negatives above min(positive) - delta (the ones not pruned)."""
    y = labels.to(torch.int8) if labels.dtype == torch.bool else labels
    pos = scores[y == 1]
    neg_mask = y == 0
    n_neg = int(neg_mask.sum())
    if pos.numel() == 0 or n_neg == 0:
        return 0.0
    thr = pos.min() - DELTA
    return float((neg_mask & (scores > thr)).sum()) / n_neg


# --------------------------------------------------------------------------- implementations


@dataclass
class Impl:
    name: str
    label: str
    kind: str  # "ours" | "baseline" | "reference" | "yardstick"
    fn: Callable  # (scores, labels) -> 0-dim loss with backward; for the reference, (loss, grad)
    work: str  # cost model: "N" or "PN"
    fwd_only: bool = True  # a forward-only call is meaningful (else n/a with fwd_note)
    fwd_note: str = ""
    returns_grad: bool = False  # the reference: fn returns (loss, grad), no autograd
    probe: Optional[str] = None  # "loop" | "dense": can run part of the work to extrapolate
    repeat_slow: bool = False  # a slow call is still repeated (min_reps) while the budget allows
    unavailable: Optional[str] = None  # why it cannot run on this device


def build_impls(device):
    cuda_ok = aploss_cuda.info()["cuda_kernels_usable"]
    ours_unavail = None
    where = "CPU"
    if device.type == "cuda":
        where = "CUDA"
        if not cuda_ok:
            ours_unavail = "unavailable: CUDA kernels not built/usable (aploss_cuda.info())"
    impls = [
        Impl("loop", "per-positive loop", "baseline",
             lambda s, y: per_positive_loop(s, y, DELTA), "PN", fwd_only=False,
             fwd_note="n/a: computes its gradient in forward (as the released code)",
             probe="loop", repeat_slow=True),
        Impl("reference", "reference (f64)", "reference",
             lambda s, y: ap_loss_reference(s, y, DELTA, True), "PN", fwd_only=False,
             fwd_note="n/a: returns loss and gradient together", returns_grad=True),
        Impl("dense", "dense vectorized", "baseline",
             lambda s, y: dense_vectorized(s, y, DELTA), "PN", probe="dense"),
        Impl("pairwise", f"ours pairwise ({where})", "ours",
             lambda s, y: aploss_cuda.ap_loss(s, y, delta=DELTA, method="pairwise"), "PN",
             unavailable=ours_unavail),
        Impl("sorted", f"ours sorted ({where})", "ours",
             lambda s, y: aploss_cuda.ap_loss(s, y, delta=DELTA, method="sorted"), "N",
             unavailable=ours_unavail),
        Impl("focal", "sigmoid focal loss", "yardstick", focal_loss, "N"),
    ]
    return impls


def probe_fn(impl, k):
    """A call doing k units of the impl's work (k positives of the loop, k tiles of the
    dense baseline)."""
    if impl.probe == "loop":
        return lambda s, y: per_positive_loop(s, y, DELTA, max_iters=k)
    if impl.probe == "dense":
        return lambda s, y: dense_vectorized(s, y, DELTA, max_chunks=k)
    raise ValueError(impl.name)


def dense_chunks(n_neg, p, device):
    chunk_elems = 2**28 if device.type == "cuda" else 2**24
    rows = max(1, chunk_elems // max(n_neg, p, 1))
    return math.ceil(p / rows)


# --------------------------------------------------------------------------- clocks and memory


class Clock:
    """Wall time of one call: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, thunk):
        if self.cuda:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            out = thunk()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) / 1e3, out
        t = time.perf_counter()
        out = thunk()
        return time.perf_counter() - t, out


_LIBC = None


def _proc_status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


class MemoryMeter:
    """Peak extra memory of one call.

    CUDA: torch.cuda.max_memory_allocated() - memory_allocated() before the call, after
    reset_peak_memory_stats().
    CPU: the process's resident-set high-water mark (VmHWM) minus its resident set
    before the call, after freeing (malloc_trim) and resetting the high-water mark
    (writing 5 to /proc/self/clear_refs, Linux >= 4.0). torch's CPU allocator is plain
    malloc, so every byte the call touches counts, inside torch or not; the gradient
    the call returns is included. Unavailable (None) where /proc/self/clear_refs is not
    writable.
    """

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.method = (
            "torch.cuda.max_memory_allocated() delta over the call"
            if self.cuda
            else "RSS high-water delta: VmHWM after the call - VmRSS before it, in-process, "
            "after malloc_trim(0) and a reset of VmHWM via /proc/self/clear_refs"
        )
        self.available = True
        if not self.cuda:
            global _LIBC
            try:
                _LIBC = _LIBC or ctypes.CDLL("libc.so.6")
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.available = _proc_status_kb("VmHWM") is not None
            except OSError:
                self.available = False
            if not self.available:
                self.method = "unavailable (/proc/self/clear_refs not writable)"

    def start(self):
        # no gc.collect() here (150 ms with torch loaded): tensors are freed by reference
        # counting; run.py collects once per point
        if self.cuda:
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return
        if not self.available:
            return
        try:
            _LIBC.malloc_trim(0)
        except AttributeError:
            pass
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.base = _proc_status_kb("VmRSS") * 1024

    def stop(self):
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        if not self.available:
            return None
        return max(0, _proc_status_kb("VmHWM") * 1024 - self.base)


class CpuContention:
    """Share of the machine's CPU time used by other processes (and stolen by the
    hypervisor) between start() and stop(): /proc/stat busy time minus this process's
    own user+system time, over wall time x CPUs. None where /proc is unreadable."""

    def __init__(self):
        self.tck = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ncpu = os.cpu_count() or 1

    def _snap(self):
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait
            with open("/proc/self/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])  # utime, stime (all threads)
            return busy, own, time.perf_counter()
        except (OSError, ValueError, IndexError):
            return None

    def start(self):
        self.s0 = self._snap()

    def stop(self):
        s1 = self._snap()
        if self.s0 is None or s1 is None:
            return None
        wall = s1[2] - self.s0[2]
        if wall <= 0:
            return None
        other = (s1[0] - self.s0[0]) - (s1[1] - self.s0[1])
        return max(0.0, other / self.tck / (wall * self.ncpu))


def copy_bandwidth(device):
    """Device-to-device copy bandwidth in bytes/s (one read + one write of each byte)."""
    if device.type != "cuda":
        return None
    n = 256 * 2**20  # 1 GiB of float32
    a = torch.empty(n, device=device)
    b = torch.empty_like(a)
    clock = Clock(device)
    for _ in range(3):
        b.copy_(a)
    ts = [clock(lambda: b.copy_(a))[0] for _ in range(10)]
    del a, b
    torch.cuda.empty_cache()
    return 2 * n * 4 / statistics.median(ts)


# --------------------------------------------------------------------------- one measurement


@dataclass
class Timing:
    status: str  # measured | skipped | unavailable | n/a
    median_s: Optional[float] = None
    samples: list = field(default_factory=list)
    est_s: Optional[float] = None
    est_method: str = ""
    note: str = ""


def _call(impl_fn, scores, labels, backward, returns_grad):
    """One fwd(+bwd) call; returns (loss, grad or None)."""
    if returns_grad:
        loss, grad = impl_fn(scores, labels)
        return loss, grad
    if backward:
        scores.grad = None
        loss = impl_fn(scores, labels)
        loss.backward()
        return loss, scores.grad
    with torch.no_grad():
        return impl_fn(scores, labels), None


@dataclass
class Policy:
    budget: float  # s per implementation and point: skip what is predicted to exceed it
    min_reps: int  # repetitions of a fast call (after the warm-up) ...
    target_s: float  # ... and at least this much time spent repeating it ...
    rep_cap_s: float  # ... unless the repetitions already took this long (>= 1 rep)
    max_reps: int
    slow_s: float  # a call predicted this slow is timed once, without a warm-up


def time_impl(impl_fn, copies, *, backward, returns_grad, clock, meter, policy,
              predicted=None, want_output=False, warm_up=True, budget_left=None,
              repeat_slow=False):
    """Times impl_fn over the rotating input copies.

    The first call (on copy 0) is the warm-up; it also gives the peak memory and the
    outputs for the accuracy check. Calls predicted slower than policy.slow_s are
    timed once and that first call is the sample (a multi-second loop has nothing to
    warm up); so is it when warm_up is False (the same kernels just ran in the other
    mode). Returns (Timing, mem_bytes, (loss, grad) or None).
    """
    budget_left = policy.budget if budget_left is None else budget_left

    def run(i):
        s, y = copies[i % len(copies)]
        return clock(lambda: _call(impl_fn, s, y, backward, returns_grad))

    meter.start()
    t0, out = run(0)
    mem = meter.stop()
    keep = None
    if want_output:
        loss, grad = out
        keep = (loss.detach().double(), None if grad is None else grad.detach())
    del out
    copies[0][0].grad = None
    single = (predicted is not None and predicted >= policy.slow_s) or t0 > budget_left
    samples = [t0] if (single or not warm_up) else []
    spent = sum(samples)
    i = 1
    # a slow call is timed once, or (repeat_slow) up to min_reps times within the budget:
    # the per-positive loop's time depends on the allocator's state, and it is the
    # denominator of every speedup
    while single and repeat_slow and len(samples) < policy.min_reps:
        if spent + statistics.median(samples) > budget_left:
            break
        t, out = run(i)
        del out
        copies[i % len(copies)][0].grad = None
        samples.append(t)
        spent += t
        i += 1
    while not single:
        if samples:
            med = statistics.median(samples)
            n = len(samples)
            if (n >= policy.max_reps or (n >= policy.min_reps and spent >= policy.target_s)
                    or spent >= policy.rep_cap_s or spent + med > budget_left):
                break
        t, out = run(i)
        del out
        copies[i % len(copies)][0].grad = None
        samples.append(t)
        spent += t
        i += 1
    note = (f"timed {len(samples)}x without warm-up" if single
            else ("" if warm_up else "no separate warm-up"))
    return Timing("measured", statistics.median(samples), samples, note=note), mem, keep


def max_abs_err(out, ref):
    """(|loss - ref loss|, max |grad - ref grad|) in float64."""
    if out is None or ref is None:
        return None, None
    loss, grad = out
    rloss, rgrad = ref
    el = abs(float(loss) - float(rloss))
    eg = None
    if grad is not None and rgrad is not None:
        g = grad.reshape(-1)
        r = rgrad.reshape(-1).to(g.device)
        eg = 0.0
        step = 1 << 24
        for a in range(0, g.numel(), step):  # chunked: no N-sized float64 temporaries
            eg = max(eg, float((g[a : a + step].double() - r[a : a + step].double()).abs().max()))
    return el, eg


# --------------------------------------------------------------------------- cost models


class CostModel:
    """Predicts one call's time from the impl's history at smaller sizes: time scales
    with the work (N, or P*N), from the largest measured point of the same regime and
    mode (or, failing that, the other regime)."""

    def __init__(self):
        self.hist = {}

    @staticmethod
    def work(impl, n, p):
        return float(n) if impl.work == "N" else float(n) * float(p)

    def add(self, impl, regime, mode, n, p, t):
        self.hist.setdefault((impl.name, regime, mode), []).append((self.work(impl, n, p), t, n, p))

    def fwd_ratio(self, impl):
        """fwd / fwd+bwd at the largest work where both were measured, any regime."""
        best = None
        for (name, regime, mode), pts in self.hist.items():
            if name != impl.name or mode != "fb":
                continue
            fwd = {(n, p): t for _, t, n, p in self.hist.get((name, regime, "fwd"), [])}
            for w, t, n, p in pts:
                if (n, p) in fwd and (best is None or w > best[0]):
                    best = (w, fwd[(n, p)] / t, f"N={fmt_n(n)}, P={fmt_n(p)} ({regime})")
        return (best[1], best[2]) if best else (None, "")

    def predict(self, impl, regime, mode, n, p):
        pts = self.hist.get((impl.name, regime, mode))
        if not pts:
            pts = [x for (name, _, m), v in self.hist.items() if name == impl.name and m == mode
                   for x in v]
        if not pts:
            return None, ""
        w, t, n0, p0 = max(pts, key=lambda x: x[0])
        model = "O(N)" if impl.work == "N" else "O(P*N)"
        est = t * self.work(impl, n, p) / w
        return est, f"extrapolated {model} from the measured N={fmt_n(n0)}, P={fmt_n(p0)}"


def fmt_n(x):
    x = float(x)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            v = x / div
            return (f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.3g}") + suf
    return f"{x:.0f}"
