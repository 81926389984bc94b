#!/usr/bin/env python
"""Benchmark aploss_cuda against the baselines it replaces.

Compares, on the same inputs in one run: the per-positive loop of the authors'
released code, the pure-PyTorch float64 reference, a dense P x N vectorization, our
C++ CPU kernels (method="sorted" and "pairwise"), our CUDA kernels when usable, and
sigmoid focal loss forward+backward as the cost yardstick. Prints tables and the
headline checks, writes <out>/<device>-<date>.json/.md and PNG plots (the .md's
Notes say what every column means). The "grouped" section times group_ids (per image,
per class, retrieval-style) against the ungrouped call at the same N.

    python benchmarks/run.py            # the default set (about 3.5 min on 2 CPU cores)
    python benchmarks/run.py --quick    # a small set, under a minute
    python benchmarks/run.py --section grouped   # grouped vs ungrouped only (~30 s on CPU)
    python benchmarks/run.py --section distributed   # bytes per call under process_group (CPU, gloo)
"""

import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

import torch  # noqa: E402


def _import_aploss():
    """Imports aploss_cuda (from the repo root when it is not installed). Retries a few
    times when the extension itself fails to load: it may be mid-rebuild."""
    import importlib

    try:
        return importlib.import_module("aploss_cuda")
    except ModuleNotFoundError as e:
        if e.name != "aploss_cuda":
            raise
        sys.path.insert(1, os.path.dirname(_HERE))
    for attempt in range(4):
        try:
            return importlib.import_module("aploss_cuda")
        except ImportError as e:
            if attempt == 3 or (isinstance(e, ModuleNotFoundError) and e.name == "aploss_cuda"):
                raise
            print(f"import aploss_cuda failed ({e}); retrying in 10 s", file=sys.stderr)
            time.sleep(10)


aploss_cuda = _import_aploss()

import distributed_comm  # noqa: E402
import grouped  # noqa: E402
import harness as H  # noqa: E402
import report  # noqa: E402

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is in the [bench] extra
    tqdm = None

RETINANET = dict(images=16, anchors=76_725, classes=80, positives=2_000)

DEFAULTS = {
    # device: (N sweep sizes, N-sweep positives, P-sweep N, P-sweep positives)
    ("cpu", False): ("100k,250k,1M,2M,4M,16M", "N/1000", "1M", "100,300,1000,3000,10000"),
    ("cpu", True): ("20k,100k,500k", "N/1000", "100k", "20,2000"),
    ("cuda", False): ("1M,4M,16M,64M,128M", "N/1000", "16M", "500,2000,8000,32000,128000"),
    ("cuda", True): ("1M,16M", "N/1000", "4M", "400,4000"),
}
# The float64 reference is O(P*N) with an N-sized scatter per positive; past this work
# it falls out of cache and its time grows faster than P*N: small sizes only.
# quick: N values of the distributed section (2 gloo ranks, P = N/1000)
DISTRIBUTED_SIZES = {False: [100_000, 1_000_000, 4_000_000], True: [20_000, 200_000]}
# device, quick: N values of the grouped-vs-ungrouped section (P as the N sweep)
GROUPED_SIZES = {
    ("cpu", False): "1M,4M",
    ("cpu", True): "100k",
    ("cuda", False): "4M,16M,64M",
    ("cuda", True): "1M,16M",
}
REFERENCE_MAX_PN = 1e8  # (1e7 with --quick)
QUICK_SOFT_LIMIT_S = 35.0
HEADLINES = {
    "a": dict(regime="init", n=4_000_000, p=4_000),
    "b": dict(regime="init", n=2_000_000, p=2_000),
}
LABEL_DTYPES = {
    "int64": torch.int64, "int32": torch.int32, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool, "float32": torch.float32,
}
SCORE_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def parse_count(text):
    """'4M' -> 4_000_000, '1e6' -> 1_000_000, '98.2M', '64k', '2G', '65536'."""
    t = text.strip().replace("_", "").replace(",", "")
    m = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)", t)
    if not m:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (use e.g. 4000000, 4e6, 4M, 64k)")
    v = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    if v < 1 or v != v:
        raise argparse.ArgumentTypeError(f"count must be >= 1: {text!r}")
    return int(round(v))


def parse_list(text):
    if text.strip().lower() in ("", "none", "off"):
        return []
    return [parse_count(x) for x in text.split(",") if x.strip()]


def parse_nsweep_p(text):
    """'N/1000' -> ('ratio', 1e-3); '2000' -> ('fixed', 2000)."""
    m = re.fullmatch(r"\s*N\s*/\s*([0-9.eE+kKmM]+)\s*", text)
    if m:
        return ("ratio", 1.0 / parse_count(m.group(1)))
    return ("fixed", parse_count(text))


def build_parser():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--section", choices=["all", "sweeps", "grouped", "distributed"], default="all",
                    help="what to run: 'sweeps' = the N and P sweeps (and the RetinaNet preset) "
                    "against the baselines; 'grouped' = group_ids (per image, per class, "
                    "retrieval) vs the ungrouped call at the same N, written to "
                    "<device>-<date>[-quick]-grouped.json/.md; 'distributed' = bytes "
                    "communicated per call under process_group against N (2 gloo processes, "
                    "CPU), written to <device>-<date>[-quick]-distributed.json/.md; 'all' "
                    "(default) = all of them (distributed: CPU only)")
    ap.add_argument("--grouped-sizes", default=None, metavar="N",
                    help="N values of the grouped section, comma list (default CPU 1M,4M, "
                    "--quick 100k; CUDA 4M,16M,64M); P as --nsweep-p")
    ap.add_argument("--grouped-rounds", type=int, default=None,
                    help="interleaved timed rounds of the grouped section (default 7, --quick 3)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, budget 2 s, fewer repetitions, and after 35 s the O(P*N) "
                    "implementations are no longer run: finishes within 60 s")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="where to run: auto = cuda when torch.cuda.is_available(), else cpu")
    ap.add_argument("--sizes", default=None,
                    help="N values of the N sweep, comma list; accepts 1e6, 4M, 64k "
                    "('none' skips the sweep). Default CPU: 100k,250k,1M,2M,4M,16M; "
                    "CUDA: 1M,4M,16M,64M,128M")
    ap.add_argument("--nsweep-p", default=None, metavar="P",
                    help="positives at each N of the N sweep: 'N/1000' (default: P grows "
                    "with N) or a fixed count like 2000")
    ap.add_argument("--positives", default=None,
                    help="P values of the P sweep, comma list ('none' skips it). Default "
                    "CPU: 100,300,1000,3000,10000 at N=1M; CUDA: 500..128000 at N=16M")
    ap.add_argument("--psweep-n", default=None, metavar="N",
                    help="N of the P sweep (default CPU 1M, CUDA 16M)")
    ap.add_argument("--regime", choices=["init", "trained", "both"], default="both",
                    help="score distribution: 'init' = all scores ~ N(-4.6, 0.5), nothing "
                    "pruned (worst case); 'trained' = positives ~ N(2, 1), the rest ~ "
                    "N(-4.6, 0.5), most negatives pruned; 'both' (default)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per measurement (default 10, --quick 2): an implementation "
                    "whose single call is predicted to take longer is not run; the table "
                    "says 'skipped (> budget)' with an extrapolated estimate")
    ap.add_argument("--out", default=None,
                    help="output folder for <device>-<date>[-quick].json/.md/.png "
                    "(default benchmarks/results)")
    ap.add_argument("--no-plot", action="store_true", help="do not write the PNG plots")
    ap.add_argument("--label-dtype", choices=list(LABEL_DTYPES), default="int64",
                    help="labels dtype (default int64; bool/uint8 cannot hold -1: no ignored entries)")
    ap.add_argument("--score-dtype", choices=list(SCORE_DTYPES), default="float32",
                    help="scores dtype (default float32)")
    ap.add_argument("--ignore-frac", type=float, default=0.01,
                    help="fraction of entries labelled -1 (ignored), default 0.01")
    ap.add_argument("--copies", type=int, default=3,
                    help="input copies rotated between timed calls so caches do not "
                    "flatter (default 3)")
    ap.add_argument("--min-reps", type=int, default=None,
                    help="minimum timed repetitions of a fast call (default 3, --quick 2)")
    ap.add_argument("--impls", default=None,
                    help="comma subset of: loop,reference,dense,pairwise,sorted,focal (default all)")
    ap.add_argument("--retinanet", choices=["auto", "on", "off"], default="auto",
                    help="the RetinaNet-scale preset: 16 images x 76,725 anchors x 80 classes "
                    "= 98.2M entries, P = 2,000, both regimes (auto: on for CUDA, not in --quick)")
    ap.add_argument("--seed", type=int, default=0, help="base random seed")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


# --------------------------------------------------------------------------- one point


class Runner:
    def __init__(self, args, device):
        self.args = args
        self.device = device
        self.impls = H.build_impls(device)
        if args.impls:
            keep = [x.strip() for x in args.impls.split(",") if x.strip()]
            unknown = set(keep) - {i.name for i in self.impls}
            if unknown:
                raise SystemExit(f"--impls: unknown {sorted(unknown)}")
            self.impls = [i for i in self.impls if i.name in keep]
        self.clock = H.Clock(device)
        self.meter = H.MemoryMeter(device)
        self.policy = H.Policy(
            budget=args.budget,
            min_reps=args.min_reps,
            target_s=0.15 if args.quick else 0.6,
            rep_cap_s=0.5 if args.quick else 2.0,
            max_reps=100 if device.type == "cuda" else 30,
            slow_s=0.5 if args.quick else 1.5,
        )
        self.cost = H.CostModel()
        self.label_dtype = LABEL_DTYPES[args.label_dtype]
        self.score_dtype = SCORE_DTYPES[args.score_dtype]
        self.bar = None
        # --quick must stay short on a busy machine too: past this, the O(P*N)
        # implementations are no longer run (skipped, with their estimates)
        self.deadline = time.perf_counter() + (QUICK_SOFT_LIMIT_S if args.quick else float("inf"))

    def _inputs(self, regime, n, p, seed):
        copies = []
        for c in range(self.args.copies):
            s, y = H.make_inputs(n, p, regime, score_dtype=self.score_dtype,
                                 label_dtype=self.label_dtype, ignore_frac=self.args.ignore_frac,
                                 device=self.device, seed=seed * 7919 + c)
            s.requires_grad_(True)
            copies.append((s, y))
        return copies

    def calibrate(self):
        """Tiny calls of the O(P*N) impls without a probe, so the first real point has
        a prediction too."""
        n, p = 1 << 15, 32
        copies = self._inputs("init", n, p, 12345)
        for impl in self.impls:
            if impl.unavailable or impl.work != "PN" or impl.probe:
                continue
            for mode in ("fb", "fwd"):
                if mode == "fwd" and not impl.fwd_only:
                    continue
                t, _, _ = H.time_impl(impl.fn, copies, backward=mode == "fb",
                                      returns_grad=impl.returns_grad, clock=self.clock,
                                      meter=self.meter, policy=self.policy, predicted=1e9)
                self.cost.add(impl, "calibration", mode, n, p, t.median_s)

    def _tick(self, text):
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)

    def _probe(self, impl, copies, n, p, n_neg, backward):
        """Runs 0 and k units of a probe-able baseline; returns (estimate of the full
        call, method text, peak memory of the k-unit call, units, per-unit time)."""
        units = p if impl.probe == "loop" else H.dense_chunks(n_neg, p, self.device)
        unit_name = "positives" if impl.probe == "loop" else "tiles"

        def once(k, mem=False):
            fn = H.probe_fn(impl, k)
            if mem:
                self.meter.start()
            t, _ = self.clock(lambda: H._call(fn, copies[0][0], copies[0][1], backward, False))
            copies[0][0].grad = None
            return t, (self.meter.stop() if mem else None)

        def per_unit(tk, k, t0):
            # noise can make tk - t0 <= 0: then charge the whole call to the k units,
            # an upper bound
            d = tk - t0
            return d / k if d > 0.05 * tk else tk / k

        t0 = min(once(0)[0], once(0)[0])
        k = min(units, 2)
        tk, mem = once(k, mem=True)
        per = per_unit(tk, k, t0)
        est = t0 + per * units
        if est > self.policy.budget and k < units:
            # refine on a larger subset: an eighth of the budget, at most 1.5 s, at most
            # a quarter of the units (the full call is predicted over budget)
            target = min(self.policy.budget / 8, 1.5)
            k2 = int(min(units // 4, 128 * k, max(k + 1, target / per)))
            if k2 > k:
                tk, mem = once(k2, mem=True)
                k = k2
                per = per_unit(tk, k, t0)
                est = t0 + per * units
        how = (f"measured on the first {k} of {units} {unit_name} plus setup, scaled "
               f"linearly (exact for its cost model: every {unit_name[:-1]} costs the same)")
        return est, how, mem, units, per

    def measure_point(self, regime, n, p, seed):
        dev = self.device
        gc.collect()
        copies = self._inputs(regime, n, p, seed)
        s0, y0 = copies[0]
        rel = H.relevant_fraction(s0.detach(), y0)
        n_neg = int((y0 == 0).sum()) if y0.dtype != torch.bool else int((~y0).sum())
        point = dict(regime=regime, n=n, p=p, n_neg=n_neg, relevant_frac=rel, rows=[])
        ref, ref_src = None, None
        by_name = {}
        for impl in self.impls:
            row = dict(impl=impl.name, label=impl.label, kind=impl.kind)
            keep = None
            t_impl = time.perf_counter()
            for mode in ("fb", "fwd"):
                key = "fwd_bwd" if mode == "fb" else "fwd"
                backward = mode == "fb"
                if impl.unavailable:
                    row[key] = dict(status="unavailable", note=impl.unavailable)
                    continue
                if mode == "fwd" and not impl.fwd_only:
                    row[key] = dict(status="n/a", note=impl.fwd_note)
                    continue
                pred, how, probe_mem = None, "", None
                fb_row = row.get("fwd_bwd", {})
                if mode == "fwd" and fb_row.get("status") == "skipped":
                    # forward of a call too slow to run: not run either, estimated from the
                    # forward/fwd+bwd ratio at the largest size where both were measured
                    ratio, where = self.cost.fwd_ratio(impl)
                    ok = bool(ratio) and fb_row.get("est_s") is not None
                    row[key] = dict(status="skipped", est_s=fb_row["est_s"] * ratio if ok else None,
                                    est_method=(f"fwd+bwd estimate x the fwd/(fwd+bwd) ratio {ratio:.2f} "
                                                f"measured at {where}") if ok else "not estimated",
                                    note=fb_row.get("note", "skipped (> budget)"))
                    continue
                if impl.work == "PN" and time.perf_counter() > self.deadline:
                    pred, how = self.cost.predict(impl, regime, mode, n, p)
                    row[key] = dict(status="skipped", est_s=pred, est_method=how,
                                    note="skipped (--quick soft time limit reached)")
                    continue
                ref_cap = REFERENCE_MAX_PN / (10 if self.args.quick else 1)
                if impl.name == "reference" and n * p > ref_cap:
                    pred, how = self.cost.predict(impl, regime, mode, n, p)
                    row[key] = dict(status="skipped", est_s=pred, est_method=how,
                                    note=f"skipped (> budget; the reference runs only where "
                                    f"P*N <= {ref_cap:.0e})")
                    continue
                if impl.probe and mode == "fb":
                    pred, how, probe_mem, units, per = self._probe(impl, copies, n, p, n_neg, backward)
                    row["probe"] = dict(units=units, per_unit_s=per)
                elif mode == "fwd" and fb_row.get("status") == "measured":
                    ratio, where = self.cost.fwd_ratio(impl)
                    pred = fb_row["median_s"] * (ratio or 1.0)
                    how = (f"fwd+bwd measured here x the fwd/(fwd+bwd) ratio {ratio:.2f} at {where}"
                           if ratio else "fwd+bwd measured here (upper bound)")
                elif impl.work == "PN":
                    pred, how = self.cost.predict(impl, regime, mode, n, p)
                # only the O(P*N) implementations are ever skipped; sorted and focal always run
                # budget per implementation and point: fwd+bwd, then forward-only if the
                # time left allows
                budget_left = self.policy.budget - (time.perf_counter() - t_impl if mode == "fwd" else 0.0)
                if impl.work == "PN" and pred is not None and pred > budget_left:
                    row[key] = dict(status="skipped", est_s=pred, est_method=how,
                                    note="skipped (> budget)")
                    if mode == "fb" and probe_mem is not None:
                        row["mem_bytes"] = probe_mem
                        row["mem_note"] = "from the probe (peak is per positive/tile, independent of P)"
                    continue
                t, mem, out = H.time_impl(
                    impl.fn, copies, backward=backward, returns_grad=impl.returns_grad,
                    clock=self.clock, meter=self.meter, policy=self.policy,
                    predicted=pred, want_output=backward, budget_left=max(budget_left, 0.0),
                    warm_up=not (mode == "fwd" and fb_row.get("status") == "measured"),
                    repeat_slow=impl.repeat_slow)
                self.cost.add(impl, regime, mode, n, p, t.median_s)
                row[key] = dict(status="measured", median_s=t.median_s, samples=t.samples,
                                reps=len(t.samples), note=t.note)
                if mode == "fb":
                    row["mem_bytes"] = mem
                    keep = out
            if impl.name == "reference" and keep is not None:
                ref, ref_src = keep, "reference"
            row["_out"] = keep
            row["bench_wall_s"] = time.perf_counter() - t_impl  # what this row cost the run
            point["rows"].append(row)
            by_name[impl.name] = row
            self._tick(f"{regime} N={H.fmt_n(n)} P={H.fmt_n(p)} {impl.name}")

        # ground truth for the accuracy columns
        if ref is None:
            sorted_impl = next((i for i in H.build_impls(dev) if i.name == "sorted"), None)
            if sorted_impl is not None and not sorted_impl.unavailable:
                s64 = s0.detach().double().requires_grad_(True)
                loss = aploss_cuda.ap_loss(s64, y0, delta=H.DELTA, method="sorted")
                loss.backward()
                ref, ref_src = (loss.detach(), s64.grad), "sorted-f64"
                del s64
        point["error_vs"] = ref_src
        for row in point["rows"]:
            out = row.pop("_out")
            if (ref is not None and out is not None and row["kind"] != "yardstick"
                    and not (ref_src == "reference" and row["impl"] == "reference")):
                el, eg = H.max_abs_err(out, ref)
                row["err_loss"], row["err_grad"] = el, eg
            if out is not None and row["impl"] != "focal":
                row["loss"] = float(out[0])
        del ref
        # ratios
        loop = by_name.get("loop", {}).get("fwd_bwd", {})
        loop_t = loop.get("median_s") or loop.get("est_s")
        focal = by_name.get("focal", {})
        bytes_moved = n * (2 * s0.element_size() + y0.element_size())
        for row in point["rows"]:
            for key in ("fwd_bwd", "fwd"):
                m = row.get(key, {})
                t = m.get("median_s") or m.get("est_s")
                if not t:
                    continue
                ft = focal.get(key, {}).get("median_s")
                if ft:
                    m["vs_focal"] = t / ft
                if key == "fwd_bwd" and loop_t and row["impl"] != "loop":
                    m["speedup_vs_loop"] = loop_t / t
                    m["speedup_vs_loop_estimated"] = loop.get("status") != "measured" or m.get("status") != "measured"
                if key == "fwd_bwd" and dev.type == "cuda" and m.get("status") == "measured":
                    m["gbps"] = bytes_moved / m["median_s"] / 1e9
        point["bytes_one_pass"] = bytes_moved
        del copies, s0, y0
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return point


# --------------------------------------------------------------------------- main


def library_version():
    """The git commit of the checkout and whether the library's sources differ from it
    (the benchmark measures whatever extension is built in place or installed)."""
    import subprocess

    root = os.path.dirname(_HERE)
    info = dict(extension=getattr(aploss_cuda._C, "__file__", None))
    try:
        info["extension_mtime"] = datetime.datetime.fromtimestamp(
            os.path.getmtime(info["extension"])).isoformat(timespec="seconds")
    except (OSError, TypeError):
        pass
    try:
        run = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True,
                                        timeout=10).stdout.strip()
        info["git_commit"] = run("rev-parse", "HEAD") or None
        info["sources_modified"] = bool(run("status", "--porcelain", "--", "csrc", "aploss_cuda", "setup.py"))
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def device_slug(device):
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"cpu-{torch.get_num_threads()}cores"


def main(argv=None):
    args = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    if args.device == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        dev = args.device
        if dev == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    device = torch.device(dev)
    d_sizes, d_np, d_pn, d_ps = DEFAULTS[(dev, args.quick)]
    sizes = parse_list(args.sizes if args.sizes is not None else d_sizes)
    nsweep_p = parse_nsweep_p(args.nsweep_p or d_np)
    p_list = parse_list(args.positives if args.positives is not None else d_ps)
    psweep_n = parse_count(args.psweep_n or d_pn)
    if args.budget is None:
        args.budget = 2.0 if args.quick else 10.0
    if args.min_reps is None:
        args.min_reps = 2 if args.quick else 3
    regimes = ["init", "trained"] if args.regime == "both" else [args.regime]
    do_sweeps = args.section in ("all", "sweeps")
    do_grouped = args.section in ("all", "grouped")
    grouped_regime = "trained" if args.regime == "trained" else "init"
    if not do_sweeps:
        regimes = [grouped_regime]
    grouped_sizes = parse_list(args.grouped_sizes if args.grouped_sizes is not None
                               else GROUPED_SIZES[(dev, args.quick)]) if do_grouped else []
    grouped_rounds = args.grouped_rounds or (3 if args.quick else 7)
    if grouped_rounds < 1:
        raise SystemExit("--grouped-rounds must be >= 1")
    retinanet = args.retinanet == "on" or (args.retinanet == "auto" and dev == "cuda" and not args.quick)
    if LABEL_DTYPES[args.label_dtype] in (torch.bool, torch.uint8) and args.ignore_frac > 0:
        print(f"note: --label-dtype {args.label_dtype} cannot hold -1: no ignored entries",
              file=sys.stderr)

    # the list of points: (sweep, regime, n, p)
    plan = []
    for regime in regimes if do_sweeps else []:
        for n in sizes:
            p = max(1, int(round(n * nsweep_p[1]))) if nsweep_p[0] == "ratio" else nsweep_p[1]
            plan.append(("N", regime, n, min(p, n)))
        for p in p_list:
            plan.append(("P", regime, psweep_n, min(p, psweep_n)))
        if retinanet:
            r = RETINANET
            plan.append(("retinanet", regime, r["images"] * r["anchors"] * r["classes"], r["positives"]))
    unique = []
    for _, regime, n, p in plan:
        if (regime, n, p) not in unique:
            unique.append((regime, n, p))

    runner = Runner(args, device)
    load0 = os.getloadavg()
    meta = dict(
        device=device_slug(device),
        device_name=(torch.cuda.get_device_name(device) if dev == "cuda"
                     else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"),
        date=datetime.date.today().isoformat(),
        started=datetime.datetime.now().isoformat(timespec="seconds"),
        torch=torch.__version__, python=platform.python_version(),
        aploss_info=aploss_cuda.info(), library=library_version(), cpu_threads=torch.get_num_threads(),
        argv=sys.argv[1:] if argv is None else list(argv), quick=args.quick, section=args.section,
        budget_s=args.budget, min_reps=args.min_reps, copies=args.copies,
        score_dtype=args.score_dtype, label_dtype=args.label_dtype, ignore_frac=args.ignore_frac,
        delta=H.DELTA, interpolate=True, regimes={r: H.REGIMES[r] for r in regimes},
        nsweep_positives=("N/%g" % (1 / nsweep_p[1])) if nsweep_p[0] == "ratio" else nsweep_p[1],
        psweep_n=psweep_n, focal_source=H.FOCAL_SOURCE,
        focal_pattern="valid = labels >= 0; sigmoid_focal_loss(scores[valid], (labels[valid] == 1).float(), "
        "alpha=0.25, gamma=2, reduction='sum') + backward, all inside the timed region",
        timing=("CUDA events around each call" if dev == "cuda" else "time.perf_counter around each call")
        + f"; median over repetitions after one warm-up call, inputs rotated among {args.copies} copies; "
        f"calls predicted slower than {runner.policy.slow_s} s are timed once without warm-up "
        f"(the per-positive loop: up to {args.min_reps} times within the budget)",
        memory=runner.meter.method, loadavg_start=list(load0),
    )
    if dev == "cuda":
        meta["copy_bandwidth_gbps"] = H.copy_bandwidth(device) / 1e9

    total = len(unique) * len(runner.impls) + len(grouped_sizes)
    if tqdm is not None and not args.no_progress:
        runner.bar = tqdm(total=total, unit="meas", desc=f"aploss bench {meta['device']}",
                          dynamic_ncols=True, file=sys.stderr)
    elif not args.no_progress:
        print("(install tqdm for a progress bar)", file=sys.stderr)
    contention = H.CpuContention()
    whole = H.CpuContention()
    whole.start()
    if unique:
        runner.calibrate()
    points = {}
    for i, (regime, n, p) in enumerate(unique):
        seed = args.seed * 1_000_003 + i
        contention.start()
        points[(regime, n, p)] = runner.measure_point(regime, n, p, seed)
        points[(regime, n, p)]["loadavg_1min"] = os.getloadavg()[0]
        points[(regime, n, p)]["other_cpu_share"] = contention.stop()
    distributed_rows = None
    if args.section == "distributed" or (args.section == "all" and dev == "cpu"):
        if dev != "cpu" or not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
            raise SystemExit("the distributed section runs gloo processes on the CPU")
        distributed_rows = distributed_comm.measure(
            DISTRIBUTED_SIZES[args.quick], world=2, reps=3 if args.quick else 5)
    grouped_result = None
    if grouped_sizes:
        grouped_result = grouped.run_section(
            runner, grouped_sizes, nsweep_p, grouped_regime, args.seed, grouped_rounds,
            bar=runner.bar)
    if runner.bar is not None:
        runner.bar.close()

    sweeps = []
    for sweep, regime, n, p in plan:
        sweeps.append(dict(sweep=sweep, regime=regime, n=n, p=p))
    meta["loadavg_end"] = list(os.getloadavg())
    meta["loadavg_max_during"] = max([p["loadavg_1min"] for p in points.values()] + [0.0])
    meta["other_cpu_share"] = whole.stop()
    meta["other_cpu_share_max_point"] = max(
        [p["other_cpu_share"] or 0.0 for p in points.values()]
        + [p["other_cpu_share"] or 0.0 for p in (grouped_result or {}).get("points", [])] + [0.0])
    meta["wall_s"] = time.perf_counter() - t_start
    result = dict(meta=meta, sweeps=sweeps,
                  points=[dict(key=f"{r}-{n}-{p}", **points[(r, n, p)]) for (r, n, p) in unique])
    if grouped_result is not None:
        result["grouped"] = grouped_result
    result["headline"] = report.headlines(result, HEADLINES)

    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    if distributed_rows is not None:
        dstem = f"{meta['device']}-{meta['date']}" + ("-quick" if args.quick else "") + "-distributed"
        with open(os.path.join(out_dir, dstem + ".json"), "w") as f:
            json.dump(dict(meta=meta, rows=distributed_rows), f, indent=1, default=float)
        with open(os.path.join(out_dir, dstem + ".md"), "w") as f:
            f.write(f"# process_group: bytes per call ({meta['device_name']}, {meta['date']}, "
                    f"library {meta['library']})\n\n" + distributed_comm.DESCRIPTION + "\n\n"
                    + distributed_comm.markdown(distributed_rows) + "\n")
        print(distributed_comm.markdown(distributed_rows))
        if args.section == "distributed":
            print(f"\nwrote {os.path.join(out_dir, dstem)}.json/.md")
            return 0
    stem = (f"{meta['device']}-{meta['date']}" + ("-quick" if args.quick else "")
            + ("-grouped" if args.section == "grouped" else "-sweeps" if args.section == "sweeps" else ""))
    if not args.no_plot:
        result["meta"]["plots"] = report.plots(result, out_dir, stem)
    meta["wall_s"] = time.perf_counter() - t_start
    text = report.text_report(result)
    print(text)
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump(result, f, indent=1, default=float)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(report.markdown_report(result))
    print(f"\nwrote {os.path.join(out_dir, stem)}.json/.md" + (" and plots" if meta.get("plots") else "")
          + f" in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
