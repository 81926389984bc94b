"""Section 'sweeps': ap_loss fwd+bwd against sigmoid focal loss and against the
baselines it replaces, over N (the N sweep), over P (the P sweep) and at RetinaNet scale.

At each point (regime, N, P) every implementation runs on the same inputs: one check
call (the warm-up; peak memory; loss and gradient against the ground truth), then timed
rounds, interleaved (common/timing.py). An O(P*N) implementation whose one call is
predicted over the budget, from its times at the points measured so far, is not run
at that point: its cells read '—' and the reason is recorded. The prediction (class
Costs) only decides what runs; no reported number is extrapolated.
"""

import statistics

import aploss_cuda
from aploss_cuda.reference import ap_loss_reference
from baselines import FOCAL_SOURCE, dense_vectorized, focal_loss, focal_loss_unmasked
from baselines import per_positive_loop
from common.inputs import DELTA, make_copies, positives_for, relevant_fraction
from common.machine import OtherProcessesCpu
from common.memory import PeakMemory
from common.tables import NOT_MEASURED, fmt_bytes, fmt_count, fmt_error, fmt_ratio, fmt_time
from common.tables import markdown_table
from common.timing import fwd_bwd, interleaved, rotating, timed

RETINANET = dict(images=16, anchors=76_725, classes=80, positives=2_000)
CALIBRATION = (1 << 15, 32)  # a tiny point: the first prediction of every O(P*N) baseline


def _ours(method):
    return lambda s, y: aploss_cuda.ap_loss(s, y, delta=DELTA, method=method)


# name -> (title, fn(scores, labels), cost: "N" always runs, "PN" runs within the budget)
IMPLEMENTATIONS = {
    "sorted": ("ap_loss sorted", _ours("sorted"), "N"),
    "pairwise": ("ap_loss pairwise", _ours("pairwise"), "PN"),
    "focal": ("focal loss", focal_loss, "N"),
    "focal-unmasked": ("focal loss, no mask", focal_loss_unmasked, "N"),
    "dense": ("dense P x N", lambda s, y: dense_vectorized(s, y, DELTA), "PN"),
    "loop": ("per-positive loop", lambda s, y: per_positive_loop(s, y, DELTA), "PN"),
    "reference": ("reference (float64)", lambda s, y: ap_loss_reference(s, y, DELTA), "PN"),
}
AP_LOSS = ("sorted", "pairwise", "dense", "loop", "reference")  # checked against the truth
SWEEP_TITLES = {"N": "N sweep", "P": "P sweep",
                "retinanet": "RetinaNet scale (16 x 76,725 anchors x 80 classes)"}


def plan(cfg):
    """[(sweep, regime, n, p)] in report order."""
    points = []
    for regime in cfg.regimes:
        points += [("N", regime, n, positives_for(n, cfg.nsweep_p)) for n in cfg.sizes]
        points += [("P", regime, cfg.psweep_n, min(p, cfg.psweep_n)) for p in cfg.positives]
        if cfg.retinanet:
            r = RETINANET
            n = r["images"] * r["anchors"] * r["classes"]
            points.append(("retinanet", regime, n, r["positives"]))
    return points


class Costs:
    """The medians measured so far of each O(P*N) implementation, per regime, and from them
    an upper bound of one call at a new point. With a time t0 = a*P0 + b*P0*N0 + c*N0
    (per-positive overhead, pairs, entries; a, b, c >= 0), every term grows at most by
    the largest of P/P0, P*N/(P0*N0) and N/N0; the tightest bound over the points wins."""

    def __init__(self):
        self.measured = {}

    def add(self, name, regime, n, p, seconds):
        self.measured.setdefault((name, regime), []).append((n, p, seconds))

    def predict(self, name, regime, n, p):
        points = self.measured.get((name, regime), [])
        return min((t0 * max(p / p0, n * p / (n0 * p0), n / n0) for n0, p0, t0 in points),
                   default=None)


def skip_reason(cfg, name, regime, n, p, costs):
    """Why name does not run at this point, or None."""
    if name in ("sorted", "pairwise") and not cfg.kernels_usable:
        return "aploss_cuda.info(): CUDA kernels not usable"
    if IMPLEMENTATIONS[name][2] == "N":
        return None
    if name == "reference" and n * p > cfg.reference_max_pn:
        # past this it falls out of cache and grows faster than P*N: no prediction holds
        return f"the reference runs where P*N <= {cfg.reference_max_pn:.0e} only"
    predicted = costs.predict(name, regime, n, p)
    if predicted is not None and predicted > cfg.budget:
        return f"one call predicted over the {cfg.budget:g} s budget"
    return None


def sorted_float64_truth(scores, labels):
    s64 = scores.detach().double().requires_grad_()
    return ("ap_loss sorted on float64 scores", *fwd_bwd(_ours("sorted"), s64, labels))


def measure_point(cfg, regime, n, p, seed, costs, meter, rounds):
    copies = make_copies(n, p, regime, seed=seed, **cfg.problem)
    scores, labels = copies[0]
    rows, thunks, first, truth = {}, {}, {}, None
    for name in sorted(cfg.impls, key=lambda k: k != "reference"):  # its output is the truth
        why = skip_reason(cfg, name, regime, n, p, costs)
        if why:
            rows[name] = dict(status="not run", why=why)
            continue
        fn = IMPLEMENTATIONS[name][1]
        scores.grad = None  # the last call's gradient is not this call's memory
        meter.start()
        try:
            first[name], (loss, grad) = timed(lambda: fwd_bwd(fn, scores, labels))
        except Exception as e:  # another build of the library may lack a method
            rows[name] = dict(status="failed", why=f"{type(e).__name__}: {e}")
            continue
        row = rows[name] = dict(status="measured", mem_bytes=meter.stop())
        if name == "reference":
            truth = ("reference (float64)", loss, grad)
        if name in AP_LOSS and (truth or cfg.kernels_usable):
            truth = truth or sorted_float64_truth(scores, labels)
            row.update(loss=float(loss), err_loss=abs(float(loss) - float(truth[1])),
                       err_grad=float((grad.double() - truth[2].double()).abs().max()))
        del loss, grad
        thunks[name] = rotating(fn, copies)
    samples = interleaved(thunks, first, rounds=rounds, round_s=cfg.round_s, budget_s=cfg.budget)
    for name, seconds in samples.items():
        rows[name].update(median_s=statistics.median(seconds), samples=seconds)
        costs.add(name, regime, n, p, rows[name]["median_s"])
    order = list(IMPLEMENTATIONS)
    return dict(regime=regime, n=n, p=p, relevant_frac=relevant_fraction(scores.detach(), labels),
                truth=truth and truth[0],
                impls=dict(sorted(rows.items(), key=lambda kv: order.index(kv[0]))))


def run(cfg, progress):
    meter, costs, points = PeakMemory(cfg.device), Costs(), plan(cfg)
    if any(IMPLEMENTATIONS[name][2] == "PN" for name in cfg.impls):
        for regime in cfg.regimes:
            measure_point(cfg, regime, *CALIBRATION, cfg.seed, costs, meter, rounds=1)
    measured = {}
    for i, (sweep, regime, n, p) in enumerate(points):
        if (regime, n, p) not in measured:
            cpu = OtherProcessesCpu().start()
            seed = cfg.seed * 1_000_003 + i
            point = measure_point(cfg, regime, n, p, seed, costs, meter, cfg.rounds)
            point.update(other_cpu_share=cpu.stop(), sweeps=[])
            measured[(regime, n, p)] = point
        measured[(regime, n, p)]["sweeps"].append(sweep)
        progress.step(f"{sweep} sweep, {regime}, N={fmt_count(n)} P={fmt_count(p)}")
    return dict(points=list(measured.values()), nsweep_p=cfg.nsweep_p, focal_source=FOCAL_SOURCE,
                titles={k: v[0] for k, v in IMPLEMENTATIONS.items()})


# ---------------------------------------------------------------------------- report


def _time_cell(row):
    if row.get("status") == "failed":
        return "failed"
    if "median_s" not in row:
        return NOT_MEASURED
    return fmt_time(row["median_s"]) + (" (1 sample)" if len(row["samples"]) == 1 else "")


def _median(point, name):
    return point["impls"].get(name, {}).get("median_s")


def _ratio(a, b):
    return a / b if a and b else None


def headline(points):
    """ap_loss against focal loss at every point where both were measured."""
    rows = []
    for pt in sorted(points, key=lambda pt: (pt["regime"], pt["n"], pt["p"])):
        ours, focal, unmasked = (_median(pt, k) for k in ("sorted", "focal", "focal-unmasked"))
        if ours and focal:
            rows.append([pt["regime"], f"{pt['n']:,}", f"{pt['p']:,}", fmt_time(ours),
                         fmt_time(focal), fmt_ratio(ours / focal), fmt_time(unmasked),
                         fmt_ratio(_ratio(ours, unmasked))])
    headers = ["regime", "N", "P", "ap_loss fwd+bwd", "focal loss fwd+bwd", "ratio",
               "focal loss, no mask", "ratio"]
    return markdown_table(headers, rows) if rows else "(no point with both measured)"


def _sweep_tables(section, sweep, regime, points):
    names = [k for k in section["titles"] if any(k in pt["impls"] for pt in points)]
    titles = [section["titles"][k] for k in names]
    times, memory = [], []
    for pt in points:
        size = [f"{pt['n']:,}", f"{pt['p']:,}"]
        speedup = _ratio(_median(pt, "loop"), _median(pt, "sorted"))
        times.append(size + [f"{100 * pt['relevant_frac']:.3g}%"]
                     + [_time_cell(pt["impls"].get(k, {})) for k in names] + [fmt_ratio(speedup)])
        memory.append(size + [fmt_bytes(pt["impls"].get(k, {}).get("mem_bytes")) for k in names])
    return [f"### {SWEEP_TITLES[sweep]}, regime '{regime}'", "", "fwd+bwd, median:", "",
            markdown_table(["N", "P", "relevant negatives"] + titles + ["loop / ap_loss"], times),
            "", "Peak extra memory of one fwd+bwd call:", "",
            markdown_table(["N", "P"] + titles, memory), ""]


def _agreement(points):
    names = [k for k in AP_LOSS if any("err_grad" in pt["impls"].get(k, {}) for pt in points)]
    rows = [[pt["regime"], f"{pt['n']:,}", f"{pt['p']:,}", pt["truth"] or NOT_MEASURED]
            + [fmt_error(pt["impls"].get(k, {}).get("err_grad")) for k in names] for pt in points]
    titles = [IMPLEMENTATIONS[k][0] for k in names]
    return markdown_table(["regime", "N", "P", "ground truth"] + titles, rows)


def _not_run(section, points):
    reasons = {}
    for pt in points:
        for name, row in pt["impls"].items():
            if row["status"] != "measured":
                at = f"{pt['regime']} N={fmt_count(pt['n'])} P={fmt_count(pt['p'])}"
                reasons.setdefault((section["titles"][name], row["why"]), []).append(at)
    return [f"- {title}: {why} ({', '.join(at)})" for (title, why), at in reasons.items()]


def markdown(section):
    points = section["points"]
    out = ["## ap_loss against sigmoid focal loss", "",
           "fwd+bwd medians measured in the same interleaved rounds; ratio = ap_loss / focal "
           "loss (below 1: ap_loss is cheaper). Focal loss as RetinaNet computes it (over the "
           "non-ignored entries), and over the whole tensor with no mask "
           f"({section['focal_source']}).", "", headline(points), "", "## All implementations", ""]
    groups = {}
    for pt in points:
        for sweep in pt["sweeps"]:
            groups.setdefault((sweep, pt["regime"]), []).append(pt)
    for (sweep, regime), pts in groups.items():
        out += _sweep_tables(section, sweep, regime, sorted(pts, key=lambda pt: (pt["n"], pt["p"])))
    out += ["### Agreement", "", "Max absolute difference of the gradient from the ground truth:",
            "", _agreement(points), ""]
    not_run = _not_run(section, points)
    if not_run:
        out += [f"{NOT_MEASURED} = not measured:", ""] + not_run + [""]
    return "\n".join(out)
