"""Section 'grouped': ap_loss with group_ids against the ungrouped call at the same N.

The same scores and labels are ranked as
- one ranking (no group_ids): the denominator of every ratio;
- one ranking per image: B images, ids arange(B)[:, None, None] over a (B, A, C) view
  (ids (B, 1) over (B, N/B) where N is not a multiple of B*C);
- one ranking per class: C classes, ids arange(C) over (N/C, C) (full-size ids where N
  is not a multiple of C);
- one ranking per query: R queries, each one row of R rows of candidates, ids
  arange(R)[:, None] over (R, N/R) (full-size ids of contiguous runs where N is not a
  multiple of R): retrieval in its usual layout, groups of a few positives each;
- retrieval: Q queries, full-size int64 ids, each entry's query drawn at random;
- retrieval with large ids: the same grouping with ids x 1,000,003, no longer small codes.
Every grouped configuration also runs as the loop a user writes without group_ids: one
ungrouped call per group with a positive, on a copy permuted by group (the permutation
is prepared once, outside the timing). Its loss and gradient check the grouped call. All
calls at one N are timed in the same interleaved rounds (common/timing.py).
"""

import statistics

import torch

import aploss_cuda
from common.inputs import DELTA, make_copies, positives_for
from common.machine import OtherProcessesCpu
from common.memory import PeakMemory
from common.tables import fmt_bytes, fmt_error, fmt_ratio, fmt_time, markdown_table
from common.timing import fwd_bwd, interleaved, rotating, timed

IMAGES, CLASSES, QUERIES, BIG_ID = (8, 16), 80, 4096, 1_000_003
ROWS = 4000  # queries as rows: 1,000 candidates each at N = 4M
# At N = 4M, P = 4,000 (docs/algorithm.md, section 6): each grouping's fwd+bwd over the
# one ranking's, in the same interleaved rounds.
GOALS = {"per-image": 1.3, "per-class": 1.3, "retrieval": 1.3, "retrieval-big-ids": 1.6}
GOAL_N = 4_000_000


def configurations(n, device, seed):
    """[(name, title, view shape, group_ids or None)] for N = n entries."""
    query = torch.randint(0, QUERIES, (n,), generator=torch.Generator().manual_seed(seed))

    def image(images):
        if n % (images * CLASSES) == 0:
            return (images, n // (images * CLASSES), CLASSES), torch.arange(images)[:, None, None]
        return (images, n // images), torch.arange(images)[:, None]

    if n % ROWS == 0:
        rows = ((ROWS, n // ROWS), torch.arange(ROWS)[:, None])
    else:
        rows = ((n,), torch.arange(n) * ROWS // n)
    if n % CLASSES == 0:
        klass = ((n // CLASSES, CLASSES), torch.arange(CLASSES))
    else:
        klass = ((n,), torch.arange(n) % CLASSES)
    configs = [("ungrouped", "ungrouped (one ranking)", (n,), None)]
    configs += [(f"per-image-{b}", f"per image, {b} groups", *image(b)) for b in IMAGES if n % b == 0]
    configs += [
        ("per-class", f"per class, {CLASSES} groups", *klass),
        ("per-query", f"per query, {ROWS:,} rows", *rows),
        ("retrieval", f"retrieval, {QUERIES} groups, full-size ids", (n,), query),
        ("retrieval-big-ids", f"retrieval, {QUERIES} groups, ids x {BIG_ID:,}", (n,),
         query * BIG_ID),
    ]
    return [(name, title, shape, None if ids is None else ids.to(device))
            for name, title, shape, ids in configs]


def grouped_call(shape, ids):
    if ids is None:
        return lambda s, y: aploss_cuda.ap_loss(s, y, delta=DELTA)
    return lambda s, y: aploss_cuda.ap_loss(s.view(shape), y.view(shape), delta=DELTA,
                                            group_ids=ids)


def per_group_loop(shape, ids, labels):
    """(fn, groups, groups with a positive): the mean of one ungrouped call per group that
    has a positive, which is what the grouped call computes."""
    flat = ids.expand(shape).reshape(-1)
    order = torch.argsort(flat, stable=True)
    _, counts = torch.unique_consecutive(flat[order], return_counts=True)
    group = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    positive = labels.reshape(-1)[order].to(torch.int64) == 1
    keep = (torch.bincount(group[positive], minlength=counts.numel()) > 0).tolist()
    counts = counts.tolist()

    def loop(s, y):
        parts = zip(s.reshape(-1)[order].split(counts), y.reshape(-1)[order].split(counts), keep)
        losses = [aploss_cuda.ap_loss(a, b, delta=DELTA) for a, b, k in parts if k]
        return torch.stack(losses).mean()

    return loop, len(counts), sum(keep)


def measure(cfg, n, p, seed, meter):
    copies = make_copies(n, p, cfg.grouped_regime, seed=seed, **cfg.problem)
    scores, labels = copies[0]
    entries, thunks, first = [], {}, {}
    for name, title, shape, ids in configurations(n, cfg.device, seed):
        entry = dict(name=name, title=title, view_shape=list(shape),
                     group_ids=None if ids is None else f"{tuple(ids.shape)} {str(ids.dtype)[6:]}")
        calls = {"grouped": grouped_call(shape, ids)}
        if ids is not None:
            calls["loop"], groups, with_positive = per_group_loop(shape, ids, labels)
            entry.update(groups=groups, groups_with_positive=with_positive)
        out = {}
        for kind, fn in calls.items():
            scores.grad = None
            meter.start()
            first[(name, kind)], out[kind] = timed(lambda: fwd_bwd(fn, scores, labels))
            entry[f"{kind}_mem_bytes"] = meter.stop()
            thunks[(name, kind)] = rotating(fn, copies)
        entry["loss"] = float(out["grouped"][0])
        if "loop" in out:
            entry["err_loss_vs_loop"] = abs(entry["loss"] - float(out["loop"][0]))
            entry["err_grad_vs_loop"] = float((out["grouped"][1] - out["loop"][1]).abs().max())
        entries.append(entry)
    samples = interleaved(thunks, first, rounds=cfg.rounds, round_s=cfg.round_s,
                          budget_s=cfg.budget)
    for entry in entries:
        for kind in ("grouped", "loop"):
            if (entry["name"], kind) in samples:
                entry[f"{kind}_samples"] = samples[(entry["name"], kind)]
                entry[f"{kind}_median_s"] = statistics.median(entry[f"{kind}_samples"])
    ungrouped = entries[0]["grouped_median_s"]
    for entry in entries:
        entry["ratio_vs_ungrouped"] = entry["grouped_median_s"] / ungrouped
        if "loop_median_s" in entry:
            entry["speedup_vs_loop"] = entry["loop_median_s"] / entry["grouped_median_s"]
    return dict(n=n, p=p, entries=entries)


def run(cfg, progress):
    meter, points = PeakMemory(cfg.device), []
    for i, n in enumerate(cfg.grouped_sizes):
        cpu = OtherProcessesCpu().start()
        seed = cfg.seed * 1_000_003 + 7_777 + i
        point = measure(cfg, n, positives_for(n, cfg.nsweep_p), seed, meter)
        point["other_cpu_share"] = cpu.stop()
        points.append(point)
        progress.step(f"grouped, N={n:,}")
    return dict(regime=cfg.grouped_regime, images=IMAGES, classes=CLASSES, queries=QUERIES,
                points=points)


def markdown(section):
    out = ["## Grouped vs ungrouped (group_ids)", "",
           f"Regime '{section['regime']}'. 'grouped / ungrouped' = this configuration's fwd+bwd "
           "median / the ungrouped call's, on the same scores and labels in the same interleaved "
           "rounds. 'loop' = one ungrouped call per group with a positive (see bench_grouped.py); "
           "the error is the max absolute gradient difference between the two.", ""]
    headers = ["configuration", "group_ids", "groups (with a positive)", "fwd+bwd",
               "grouped / ungrouped", "peak extra memory", "loop fwd+bwd", "loop / grouped",
               "grad error vs loop"]
    goal_rows = []
    for pt in section["points"]:
        if pt["n"] != GOAL_N:
            continue
        for e in pt["entries"][1:]:
            goal = GOALS.get(e["name"].rsplit("-", 1)[0] if e["name"].startswith("per-image")
                             else e["name"])
            if goal is None:  # measured, with no goal of its own
                continue
            ratio = e["ratio_vs_ungrouped"]
            goal_rows.append([e["title"], fmt_ratio(ratio), f"<= {goal}",
                              "yes" if ratio <= goal else "**no**"])
    if goal_rows:
        out += ["### Goals", "", f"At N = {GOAL_N:,}: each grouping's fwd+bwd over the one "
                "ranking's (medians of the interleaved rounds).", "",
                markdown_table(["configuration", "grouped / ungrouped", "goal", "met"], goal_rows),
                ""]
    for pt in section["points"]:
        rows = [[e["title"], e["group_ids"] or "-",
                 f"{e['groups']:,} ({e['groups_with_positive']:,})" if "groups" in e else "1",
                 fmt_time(e["grouped_median_s"]), fmt_ratio(e["ratio_vs_ungrouped"]),
                 fmt_bytes(e["grouped_mem_bytes"]), fmt_time(e.get("loop_median_s")),
                 fmt_ratio(e.get("speedup_vs_loop")), fmt_error(e.get("err_grad_vs_loop"))]
                for e in pt["entries"]]
        out += [f"### N = {pt['n']:,}, P = {pt['p']:,}", "", markdown_table(headers, rows), ""]
    return "\n".join(out)
