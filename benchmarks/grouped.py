"""The "grouped vs ungrouped" section of benchmarks/run.py.

At each N (P = N/1000 by default, the regime of the N sweep) it times fwd+bwd of
ap_loss on the same scores and labels viewed as

- one ranking (no group_ids): the denominator of every ratio;
- one ranking per image: B images, ids torch.arange(B)[:, None, None] over (B, A, C)
  (or (B, 1) over (B, N/B) where N is not a multiple of B*C);
- one ranking per class: C classes, ids torch.arange(C) over (N/C, C);
- retrieval: Q queries, full-size int64 ids, each entry's query drawn at random (ids
  below 2*N: the dense codes are the ids themselves);
- retrieval with large ids: the same grouping with ids = query * 1_000_003 (the codes
  come from a sort of the ids, torch.unique-style).

The calls are interleaved (one call of every configuration per round, after one warm-up
call each), so a change of the machine's load during the section affects every
configuration alike and the ratios stay fair. Every grouped configuration is also run as
the loop a user would write without group_ids: one ungrouped ap_loss call per group with
a positive, on a permuted copy split by group (its index preparation is done once,
outside the timing); its result is the check of the grouped call (loss and gradient).
"""

import statistics
import time

import torch

import aploss_cuda
import harness as H

IMAGES, CLASSES, QUERIES = 16, 80, 4096
BIG_ID = 1_000_003
TARGET_RATIO = 1.3  # the goal: grouped fwd+bwd within 1.3x the ungrouped time


def configurations(n, device, seed):
    """[(name, label, view shape, group_ids or None)] for N = n entries."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if n % (IMAGES * CLASSES) == 0:
        image = ((IMAGES, n // (IMAGES * CLASSES), CLASSES), torch.arange(IMAGES)[:, None, None])
    else:
        image = ((IMAGES, n // IMAGES), torch.arange(IMAGES)[:, None])
    if n % CLASSES == 0:
        klass = ((n // CLASSES, CLASSES), torch.arange(CLASSES))
    else:  # not a multiple of C: the same grouping as a full-size tensor
        klass = ((n,), torch.arange(n) % CLASSES)
    query = torch.randint(0, QUERIES, (n,), generator=gen)
    configs = [
        ("ungrouped", "ungrouped (one ranking)", (n,), None),
        ("per-image", f"per image, {IMAGES} groups", *image),
        ("per-class", f"per class, {CLASSES} groups", *klass),
        ("retrieval", f"retrieval, {QUERIES} groups, full-size ids", (n,), query),
        ("retrieval-big-ids", f"retrieval, {QUERIES} groups, ids x {BIG_ID:,}", (n,), query * BIG_ID),
    ]
    out = []
    for name, label, shape, ids in configs:
        if name == "per-image" and n % IMAGES:
            continue  # N not a multiple of B: no per-image view
        out.append((name, label, shape, None if ids is None else ids.to(device)))
    return out


def _loop_plan(ids, shape, labels):
    """Permutation grouping the entries by id, the group sizes, and which groups have a
    positive: the loop's preparation, done once outside the timing."""
    flat = ids.expand(shape).reshape(-1)
    order = torch.argsort(flat, stable=True)
    _, counts = torch.unique_consecutive(flat[order], return_counts=True)
    y = labels.reshape(-1)[order]
    y = y.to(torch.int64) if y.dtype == torch.bool else y
    group = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    has_pos = torch.bincount(group[y == 1], minlength=counts.numel()) > 0
    return order, counts.tolist(), has_pos.tolist()


def _loop_fn(plan):
    order, counts, has_pos = plan
    num = sum(has_pos)

    def loop(s, y):
        sp = s.reshape(-1)[order]
        yp = y.reshape(-1)[order]
        losses = [
            aploss_cuda.ap_loss(a, b, delta=H.DELTA)
            for a, b, keep in zip(sp.split(counts), yp.split(counts), has_pos)
            if keep
        ]
        return torch.stack(losses).sum() / num if num else sp.sum() * 0

    return loop


def _grouped_fn(shape, ids):
    if ids is None:
        return lambda s, y: aploss_cuda.ap_loss(s, y, delta=H.DELTA)
    return lambda s, y: aploss_cuda.ap_loss(s.view(shape), y.view(shape), delta=H.DELTA, group_ids=ids)


def _one_call(clock, fn, s, y):
    def call():
        s.grad = None
        loss = fn(s, y)
        loss.backward()
        return loss

    t, _ = clock(call)
    s.grad = None
    return t


def measure(runner, n, p, regime, seed, rounds):
    """One N of the section: interleaved fwd+bwd timings of every configuration and of
    its per-group loop; returns a JSON-able dict."""
    copies = runner._inputs(regime, n, p, seed)
    s0, y0 = copies[0]
    entries = []
    for name, label, shape, ids in configurations(n, runner.device, seed):
        e = dict(name=name, label=label, view_shape=list(shape),
                 group_ids_shape=None if ids is None else list(ids.shape),
                 group_ids_dtype=None if ids is None else str(ids.dtype).replace("torch.", ""),
                 fns={"grouped": _grouped_fn(shape, ids)})
        if ids is not None:
            plan = _loop_plan(ids, shape, y0)
            e["groups"] = len(plan[1])
            e["groups_with_positive"] = sum(plan[2])
            e["fns"]["loop"] = _loop_fn(plan)
        entries.append(e)

    # warm-up call of each (peak memory and the outputs for the check), then the rounds
    outs = {}
    for e in entries:
        for kind, fn in e["fns"].items():
            runner.meter.start()
            s0.grad = None
            loss = fn(s0, y0)
            loss.backward()
            e[f"{kind}_mem_bytes"] = runner.meter.stop()
            outs[(e["name"], kind)] = (loss.detach().double(), s0.grad.detach().clone())
            s0.grad = None
            del loss
    for e in entries:
        if "loop" in e["fns"]:
            el, eg = H.max_abs_err(outs[(e["name"], "grouped")], outs[(e["name"], "loop")])
            e["err_loss_vs_loop"], e["err_grad_vs_loop"] = el, eg
        e["loss"] = float(outs[(e["name"], "grouped")][0])
    del outs

    samples = {(e["name"], k): [] for e in entries for k in e["fns"]}
    for r in range(rounds):
        s, y = copies[(r + 1) % len(copies)]
        for e in entries:
            for kind, fn in e["fns"].items():
                samples[(e["name"], kind)].append(_one_call(runner.clock, fn, s, y))
    base = statistics.median(samples[("ungrouped", "grouped")])
    for e in entries:
        del e["fns"]
        for kind in ("grouped", "loop"):
            ts = samples.get((e["name"], kind))
            if ts:
                e[f"{kind}_samples"] = ts
                e[f"{kind}_median_s"] = statistics.median(ts)
        e["ratio_vs_ungrouped"] = e["grouped_median_s"] / base
        if e.get("loop_median_s"):
            e["speedup_vs_loop"] = e["loop_median_s"] / e["grouped_median_s"]
    del copies, s0, y0
    return dict(regime=regime, n=n, p=p, rounds=rounds, entries=entries)


def run_section(runner, sizes, p_rule, regime, seed, rounds, bar=None):
    """The section at every N of sizes; p_rule: ('ratio', r) or ('fixed', P)."""
    contention = H.CpuContention()
    points = []
    t0 = time.perf_counter()
    for i, n in enumerate(sizes):
        p = max(1, int(round(n * p_rule[1]))) if p_rule[0] == "ratio" else p_rule[1]
        contention.start()
        pt = measure(runner, n, min(p, n), regime, seed * 1_000_003 + 7_777 + i, rounds)
        pt["other_cpu_share"] = contention.stop()
        points.append(pt)
        if bar is not None:
            bar.set_postfix_str(f"grouped N={H.fmt_n(n)}", refresh=False)
            bar.update(1)
    return dict(
        regime=regime, rounds=rounds, images=IMAGES, classes=CLASSES, queries=QUERIES,
        target_ratio=TARGET_RATIO, wall_s=time.perf_counter() - t0, points=points,
        method=("fwd+bwd, interleaved: after one warm-up call of each configuration, "
                f"{rounds} rounds of one call of every configuration (inputs rotated among "
                "the copies); medians per configuration; ratio = grouped median / ungrouped "
                "median at the same N"),
    )
