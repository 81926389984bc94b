"""Section 'family': rank_sort_loss and alrp_loss fwd+bwd against sigmoid focal loss and
against the per-positive loops of their released code, over N (P = --nsweep-p) and over
P at one N.

At each point (N, P) the five calls (each loss, its loop, focal loss) run on the same
scores: one check call each (warm-up, peak memory, and ours against the loop), then timed
rounds, interleaved (common/timing.py), so the per-round ratios compare calls made under
the same load. A loop whose one call is predicted over the budget (bench_sweeps.Costs) is
not run at that point; no reported number is extrapolated.
"""

import math
import statistics

import torch

import aploss_cuda
from baselines import FOCAL_SOURCE, alrp_loop, focal_loss, rank_sort_loop
from bench_sweeps import CALIBRATION, Costs, _time_cell
from common.inputs import make_copies, positives_for
from common.machine import OtherProcessesCpu
from common.memory import PeakMemory
from common.tables import NOT_MEASURED, fmt_bytes, fmt_error, fmt_ratio
from common.tables import markdown_table
from common.timing import fwd_bwd, interleaved, rotating, timed

RS_DELTA, ALRP_DELTA = 0.5, 1.0  # each loss's default, as released
IOU_LOW, IOU_ONE_FRAC = 0.05, 0.1  # RS targets: uniform [0.05, 1), a tenth exactly 1
# the goals: at N = 4M, P = 4000 (init regime) ours <= 1.0 x focal loss; P = 40,000 <= 1.5 x
GOAL_N, GOAL_P, GOAL_P_HIGH, GOAL_VS_FOCAL, GOAL_P_GROWTH = 4_000_000, 4_000, 40_000, 1.0, 1.5


def _rank_sort(scores, targets):
    return aploss_cuda.rank_sort_loss(scores, targets, delta=RS_DELTA)


def _rank_sort_loop(scores, targets):
    return rank_sort_loop(scores, targets, RS_DELTA)


def _alrp(scores, labels, regression_losses, delta):
    return aploss_cuda.alrp_loss(scores, labels, regression_losses, delta=delta)


def _alrp_total(fn):
    """cls_loss + loc_loss: one backward reaches the scores and the regression losses."""
    def total(scores, inputs):
        labels, regression_losses = inputs
        regression_losses.grad = None
        cls_loss, loc_loss = fn(scores, labels, regression_losses, delta=ALRP_DELTA)
        return cls_loss + loc_loss
    return total


# name -> (title, loss it belongs to, role, fn(scores, that loss's inputs))
IMPLEMENTATIONS = {
    "rank_sort": ("rank_sort_loss", "rank_sort", "ours", _rank_sort),
    "rank_sort-loop": ("Rank & Sort per-positive loop", "rank_sort", "loop", _rank_sort_loop),
    "alrp": ("alrp_loss", "alrp", "ours", _alrp_total(_alrp)),
    "alrp-loop": ("aLRP per-positive loop", "alrp", "loop", _alrp_total(alrp_loop)),
    "focal": ("focal loss", "focal", "focal", focal_loss),
    # The two passes Rank & Sort and aLRP share with ap_loss: how much of their growth
    # with P is the passes'.
    "ap": ("ap_loss", "ap", "shared passes", aploss_cuda.ap_loss),
}
LOSSES = {"rank_sort": "Rank & Sort", "alrp": "aLRP"}


def plan(cfg):
    """[(sweep, n, p)] in report order."""
    return ([("N", n, positives_for(n, cfg.nsweep_p)) for n in cfg.family_sizes]
            + [("P", cfg.family_psweep_n, min(p, cfg.family_psweep_n))
               for p in cfg.family_positives])


def loss_inputs(scores, labels, seed):
    """{loss: its second argument} built on one problem's labels: RS targets (IoU-like in
    (0, 1] on the positives, 0, -1 where ignored), aLRP (labels, regression losses in
    [0, 1) requiring grad), focal loss the labels."""
    gen = torch.Generator(device=scores.device).manual_seed(seed)
    y = labels.to(torch.int64)
    positive = y == 1
    p = int(positive.sum())
    iou = torch.rand(p, generator=gen, device=scores.device) * (1 - IOU_LOW) + IOU_LOW
    iou[torch.rand(p, generator=gen, device=scores.device) < IOU_ONE_FRAC] = 1.0
    targets = y.to(scores.dtype)  # 0 and -1 as they are
    targets[positive] = iou.to(scores.dtype)
    regression = torch.rand(p, generator=gen, device=scores.device, dtype=scores.dtype)
    return dict(rank_sort=targets, alrp=(labels, regression.requires_grad_()), focal=labels,
                ap=labels)


def agreement(ours, loop):
    """Max absolute errors of ours against the loop (loss, score gradient and, for aLRP,
    regression-loss gradient), and whether each is within sqrt(eps) of the dtype relative
    to the loop's magnitude."""
    (loss, grad, reg_grad), (loop_loss, loop_grad, loop_reg_grad) = ours, loop
    tol = math.sqrt(torch.finfo(grad.dtype).eps)
    errors = dict(err_loss=(loss, loop_loss), err_grad=(grad, loop_grad))
    if reg_grad is not None:
        errors["err_reg_grad"] = (reg_grad, loop_reg_grad)
    row, agrees = {}, True
    for key, (a, b) in errors.items():
        b = b.double()
        row[key] = float((a.double() - b).abs().max())
        agrees &= row[key] <= tol * max(1.0, float(b.abs().max()))
    return dict(row, loss=float(loss), loop_loss=float(loop_loss), tolerance=tol, agrees=agrees)


def skip_reason(cfg, name, n, p, costs):
    """Why name does not run at this point, or None."""
    role = IMPLEMENTATIONS[name][2]
    if role in ("ours", "shared passes") and not cfg.kernels_usable:
        return "aploss_cuda.info(): CUDA kernels not usable"
    predicted = costs.predict(name, cfg.family_regime, n, p) if role == "loop" else None
    if predicted is not None and predicted > cfg.budget:
        return f"one call predicted over the {cfg.budget:g} s budget"
    return None


def check_call(fn, scores, inputs, meter):
    """(seconds, (loss, score gradient, regression-loss gradient or None), peak bytes). The
    gradients stay valid: the next call replaces .grad rather than writing into it."""
    scores.grad = None  # the last call's gradient is not this call's memory
    meter.start()
    seconds, (loss, grad) = timed(lambda: fwd_bwd(fn, scores, inputs))
    mem = meter.stop()
    reg_grad = inputs[1].grad if isinstance(inputs, tuple) else None
    return seconds, (loss, grad, reg_grad), mem


def _per_round(a, b):
    """a[r] / b[r] for the rounds both ran in (a thunk over budget stops early: a prefix)."""
    return [x / y for x, y in zip(a, b)]


def measure_point(cfg, n, p, seed, costs, meter, rounds):
    copies = make_copies(n, p, cfg.family_regime, seed=seed, **cfg.problem)
    copies = [(s, loss_inputs(s, y, seed * 2 + c)) for c, (s, y) in enumerate(copies)]
    scores, inputs = copies[0]
    rows, thunks, first, outputs = {}, {}, {}, {}
    for name, (_, loss, _, fn) in IMPLEMENTATIONS.items():
        why = skip_reason(cfg, name, n, p, costs)
        if why:
            rows[name] = dict(status="not run", why=why)
            continue
        try:
            first[name], outputs[name], mem = check_call(fn, scores, inputs[loss], meter)
        except Exception as e:  # another build of the library may lack a loss
            rows[name] = dict(status="failed", why=f"{type(e).__name__}: {e}")
            continue
        rows[name] = dict(status="measured", mem_bytes=mem)
        thunks[name] = rotating(fn, [(s, extra[loss]) for s, extra in copies])
    for loss in LOSSES:
        if loss in outputs and f"{loss}-loop" in outputs:
            rows[loss].update(agreement(outputs[loss], outputs[f"{loss}-loop"]))
    del outputs
    samples = interleaved(thunks, first, rounds=rounds, round_s=cfg.round_s, budget_s=cfg.budget)
    for name, seconds in samples.items():
        rows[name].update(median_s=statistics.median(seconds), samples=seconds)
        costs.add(name, cfg.family_regime, n, p, rows[name]["median_s"])
    for loss in LOSSES:
        ours = samples.get(loss)
        if ours and "focal" in samples:
            rows[loss]["vs_focal_rounds"] = _per_round(ours, samples["focal"])
        if ours and f"{loss}-loop" in samples:
            rows[loss]["loop_vs_ours_rounds"] = _per_round(samples[f"{loss}-loop"], ours)
    return dict(n=n, p=p, impls=rows)


def run(cfg, progress):
    meter, costs = PeakMemory(cfg.device), Costs()
    measure_point(cfg, *CALIBRATION, cfg.seed, costs, meter, rounds=1)  # the loops' first cost
    measured = {}
    for i, (sweep, n, p) in enumerate(plan(cfg)):
        if (n, p) not in measured:
            cpu = OtherProcessesCpu().start()
            seed = cfg.seed * 1_000_003 + 5_555 + i
            point = measure_point(cfg, n, p, seed, costs, meter, cfg.rounds)
            point.update(other_cpu_share=cpu.stop(), sweeps=[])
            measured[(n, p)] = point
        measured[(n, p)]["sweeps"].append(sweep)
        progress.step(f"family {sweep} sweep, N={n:,} P={p:,}")
    section = dict(regime=cfg.family_regime, nsweep_p=cfg.nsweep_p, focal_source=FOCAL_SOURCE,
                   points=list(measured.values()))
    section["goals"] = goals(section)
    return section


# ---------------------------------------------------------------------------- report


def _row(point, name):
    return point["impls"].get(name, {})


def _ratio_cell(rounds):
    """median of the per-round ratios [lowest, highest]"""
    if not rounds:
        return NOT_MEASURED
    low, mid, high = min(rounds), statistics.median(rounds), max(rounds)
    return f"{fmt_ratio(mid)} [{fmt_ratio(low)}, {fmt_ratio(high)}]"


def goals(section):
    """[dict(loss, measure, value, goal, met)] from the measured N = GOAL_N points: ours /
    focal (median per-round ratio; the goal at P = GOAL_P) and the growth of ours' median
    from P = GOAL_P to GOAL_P_HIGH. met: True, False, or None where not measured."""
    init = section["regime"] == "init"  # the goals are stated for the init regime
    at = {pt["p"]: pt for pt in section["points"] if pt["n"] == GOAL_N and init}
    out = []
    for loss, title in LOSSES.items():
        for p in sorted(set(at) | {GOAL_P}):
            rounds = _row(at[p], loss).get("vs_focal_rounds") if p in at else None
            value = statistics.median(rounds) if rounds else None
            goal = GOAL_VS_FOCAL if p == GOAL_P else None
            out.append(dict(loss=title, measure=f"ours / focal loss, N = {GOAL_N:,}, P = {p:,}",
                            value=value, goal=goal,
                            met=None if goal is None or value is None else value <= goal))
        low, high = (_row(at[p], loss).get("median_s") if p in at else None
                     for p in (GOAL_P, GOAL_P_HIGH))
        value = high / low if low and high else None
        out.append(dict(loss=title, measure=f"ours at P = {GOAL_P_HIGH:,} / at P = {GOAL_P:,}, "
                        f"N = {GOAL_N:,}", value=value, goal=GOAL_P_GROWTH,
                        met=None if value is None else value <= GOAL_P_GROWTH))
    low, high = (_row(at[p], "ap").get("median_s") if p in at else None
                 for p in (GOAL_P, GOAL_P_HIGH))
    out.append(dict(loss="ap_loss (the shared passes)",
                    measure=f"at P = {GOAL_P_HIGH:,} / at P = {GOAL_P:,}, N = {GOAL_N:,}",
                    value=high / low if low and high else None, goal=None, met=None))
    return out


def _goal_table(section):
    met = {True: "yes", False: "**no**", None: NOT_MEASURED}
    rows = [[g["loss"], g["measure"], fmt_ratio(g["value"]),
             NOT_MEASURED if g["goal"] is None else f"<= {g['goal']:g}",
             met[g["met"]] if g["goal"] is not None else ""] for g in goals(section)]
    return markdown_table(["loss", "measure", "value", "goal", "met"], rows)


def _sweep_table(loss, points):
    headers = ["N", "P", IMPLEMENTATIONS[loss][0], "focal loss", "ours / focal [rounds]",
               IMPLEMENTATIONS[f"{loss}-loop"][0], "loop / ours [rounds]",
               "ours peak extra memory"]
    rows = [[f"{pt['n']:,}", f"{pt['p']:,}", _time_cell(_row(pt, loss)),
             _time_cell(_row(pt, "focal")), _ratio_cell(_row(pt, loss).get("vs_focal_rounds")),
             _time_cell(_row(pt, f"{loss}-loop")),
             _ratio_cell(_row(pt, loss).get("loop_vs_ours_rounds")),
             fmt_bytes(_row(pt, loss).get("mem_bytes"))] for pt in points]
    return markdown_table(headers, rows)


def _agreement_table(points):
    rows = []
    for loss, title in LOSSES.items():
        for pt in points:
            row = _row(pt, loss)
            if "agrees" in row:
                rows.append([title, f"{pt['n']:,}", f"{pt['p']:,}", fmt_error(row["err_loss"]),
                             fmt_error(row["err_grad"]), fmt_error(row.get("err_reg_grad")),
                             "yes" if row["agrees"] else "**no**"])
    headers = ["loss", "N", "P", "loss", "score gradient", "regression-loss gradient",
               "within sqrt(eps) x magnitude"]
    return markdown_table(headers, rows) if rows else "(the loops ran at no point)"


def _not_run(points):
    reasons = {}
    for pt in sorted(points, key=lambda pt: (pt["n"], pt["p"])):
        for name, row in pt["impls"].items():
            if row["status"] != "measured":
                reasons.setdefault((IMPLEMENTATIONS[name][0], row["why"]), []).append(
                    f"N={pt['n']:,} P={pt['p']:,}")
    return [f"- {title}: {why} ({', '.join(at)})" for (title, why), at in reasons.items()]


def markdown(section):
    points = section["points"]
    out = ["## Rank & Sort and aLRP against focal loss and their per-positive loops", "",
           f"Regime '{section['regime']}'. fwd+bwd: `rank_sort_loss(scores, targets, "
           f"delta={RS_DELTA:g})` then `loss.backward()`; `alrp_loss(scores, labels, "
           f"regression_losses, delta={ALRP_DELTA:g})` then `(cls_loss + loc_loss).backward()`, "
           "the regression losses requiring grad. RS targets: positives uniform "
           f"[{IOU_LOW:g}, 1) with {100 * IOU_ONE_FRAC:g}% exactly 1, negatives 0, ignored -1; "
           "aLRP regression losses uniform [0, 1). Focal loss: the sweeps section's yardstick "
           f"({section['focal_source']} over the non-ignored entries, RetinaNet's pattern) on "
           "the same scores, in the same interleaved rounds. Ratios: the median of the "
           "per-round ratios [lowest, highest round].", "",
           "### Goals", "",
           f"At N = {GOAL_N:,}, P = {GOAL_P:,}, regime 'init': each loss's fwd+bwd <= "
           f"{GOAL_VS_FOCAL:g} x focal loss fwd+bwd in the same run, and at P = "
           f"{GOAL_P_HIGH:,} within {GOAL_P_GROWTH:g} x its time at P = {GOAL_P:,}. From this "
           f"run's numbers ({NOT_MEASURED} = this run has no such point):", "",
           _goal_table(section), ""]
    titles = {"N": f"N sweep (P = {section['nsweep_p']})", "P": "P sweep"}
    for loss, title in LOSSES.items():
        for sweep, sweep_title in titles.items():
            pts = sorted((pt for pt in points if sweep in pt["sweeps"]),
                         key=lambda pt: (pt["n"], pt["p"]))
            if pts:
                out += [f"### {title}, {sweep_title}", "", "fwd+bwd, median:", "",
                        _sweep_table(loss, pts), ""]
    out += ["### Agreement", "", "Max absolute difference of ours from the per-positive loop "
            "(same float inputs, check call):", "", _agreement_table(points), ""]
    not_run = _not_run(points)
    if not_run:
        out += [f"{NOT_MEASURED} = not measured:", ""] + not_run + [""]
    return "\n".join(out)
