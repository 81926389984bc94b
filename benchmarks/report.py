"""Tables (stdout, Markdown), headline checks and plots for benchmarks/run.py."""

import os

from harness import fmt_n

BUSY_SHARE = 0.05  # other processes' share of the CPUs above which a point is flagged
ORDER = ["sorted", "pairwise", "focal", "dense", "loop", "reference"]
SWEEP_TITLES = {
    "N": "N sweep",
    "P": "P sweep",
    "retinanet": "RetinaNet-scale preset (16 images x 76,725 anchors x 80 classes)",
}
STYLE = {  # impl -> (colour, marker)
    "sorted": ("tab:blue", "o"),
    "pairwise": ("tab:cyan", "s"),
    "focal": ("tab:green", "^"),
    "dense": ("tab:orange", "D"),
    "loop": ("tab:red", "v"),
    "reference": ("tab:gray", "x"),
}


def fmt_t(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 100:
        return f"{s:.3g} s"
    return f"{s:.0f} s"


def fmt_bytes(b):
    if b is None:
        return "-"
    for div, suf in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if b >= div:
            v = b / div
            return (f"{v:.0f}" if v >= 100 else f"{v:.3g}") + f" {suf}"
    return f"{b} B"


def fmt_err(e):
    return "-" if e is None else ("0" if e == 0 else f"{e:.1e}")


def time_cell(m):
    st = m.get("status")
    if st == "measured":
        n = m.get("reps")
        return fmt_t(m["median_s"]) + ("" if not n or n > 2 else " (1 run)" if n == 1 else f" ({n} runs)")
    if st == "skipped":
        note = m.get("note", "")
        why = ("small sizes only" if "P*N <=" in note else
               "--quick time limit" if "time limit" in note else "> budget")
        return f"skipped ({why}) ~{fmt_t(m.get('est_s'))}"
    return st or "-"


def _ratio(x, est=False, prefix="x"):
    if x is None:
        return "-"
    v = f"{x:.3g}" if x < 1000 else f"{x:.0f}"
    return ("~" if est else "") + prefix + v


def point_rows(point, cuda, copy_bw=None):
    rows = []
    by = {r["impl"]: r for r in point["rows"]}
    for name in ORDER:
        r = by.get(name)
        if r is None:
            continue
        fb, fw = r.get("fwd_bwd", {}), r.get("fwd", {})
        est_fb = fb.get("status") == "skipped"
        cells = [
            r["label"], time_cell(fb), time_cell(fw), fmt_bytes(r.get("mem_bytes")),
            fmt_err(r.get("err_loss")), fmt_err(r.get("err_grad")),
            _ratio(fb.get("speedup_vs_loop"), fb.get("speedup_vs_loop_estimated")),
            _ratio(fb.get("vs_focal"), est_fb, prefix=""),
        ]
        if cuda:
            g, bw = fb.get("gbps"), copy_bw
            cells.append("-" if g is None else f"{g:.4g} ({100 * g / bw:.2g}%)" if bw else f"{g:.4g}")
        rows.append(cells)
    return rows


def headers(cuda, ref):
    h = ["implementation", "fwd+bwd", "fwd only", "peak extra mem", f"loss err vs {ref}",
         "grad err (max abs)", "speedup vs loop", "t / t_focal"]
    if cuda:
        h.append("GB/s (% of copy)")
    return h


def _table_text(hdr, rows):
    w = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i])
                                   for i, c in enumerate(cells))
    return "\n".join([line(hdr), "  ".join("-" * x for x in w)] + [line(r) for r in rows])


def _table_md(hdr, rows):
    out = ["| " + " | ".join(hdr) + " |", "|" + "|".join(["---"] + ["--:"] * (len(hdr) - 1)) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _groups(result):
    """[(sweep, regime, [points])] in plan order."""
    pts = {p["key"]: p for p in result["points"]}
    groups = {}
    for s in result["sweeps"]:
        groups.setdefault((s["sweep"], s["regime"]), []).append(pts[f"{s['regime']}-{s['n']}-{s['p']}"])
    return [(k[0], k[1], v) for k, v in groups.items()]


def point_title(pt, meta):
    gb = ""
    if meta.get("copy_bandwidth_gbps"):
        gb = f", one pass = {fmt_bytes(pt['bytes_one_pass'])}"
    busy = ""
    share = pt.get("other_cpu_share")
    if meta["device"].startswith("cpu") and share is not None and share > BUSY_SHARE:
        busy = f" [BUSY: other processes used {100 * share:.0f}% of the CPUs meanwhile]"
    return (f"N = {pt['n']:,} ({fmt_n(pt['n'])}), P = {pt['p']:,}, relevant negatives "
            f"{100 * pt['relevant_frac']:.3g}%{gb}; errors vs {pt.get('error_vs') or 'n/a'}{busy}")


def _meta_lines(meta):
    lines = [
        f"device: {meta['device_name']} ({meta['device']}), torch {meta['torch']}, "
        f"threads {meta['cpu_threads']}, aploss_cuda {meta['aploss_info']['version']} "
        f"(CUDA kernels usable: {meta['aploss_info']['cuda_kernels_usable']})",
        "library: commit {}{}, extension {} built {}".format(
            (meta.get("library", {}).get("git_commit") or "?")[:10],
            " (csrc/aploss_cuda modified since)" if meta.get("library", {}).get("sources_modified") else "",
            os.path.basename(meta.get("library", {}).get("extension") or "?"),
            meta.get("library", {}).get("extension_mtime", "?")),
        f"scores {meta['score_dtype']}, labels {meta['label_dtype']}, ignored fraction "
        f"{meta['ignore_frac']}, delta {meta['delta']}, interpolated AP; budget "
        f"{meta['budget_s']} s per measurement",
        f"timing: {meta['timing']}",
        f"peak extra memory: {meta['memory']}",
        f"focal loss: {meta['focal_source']}; {meta['focal_pattern']}",
        f"load average at start {tuple(round(x, 2) for x in meta['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in meta.get('loadavg_end', []))}",
    ]
    share, worst = meta.get("other_cpu_share"), meta.get("other_cpu_share_max_point") or 0.0
    if share is not None:
        lines.append(f"CPU used by other processes during the run: {100 * share:.1f}% of the "
                     f"machine on average, {100 * worst:.1f}% at the worst point (from /proc/stat)")
    if meta["device"].startswith("cpu") and worst > BUSY_SHARE:
        lines.append(f"WARNING: other processes used more than {100 * BUSY_SHARE:.0f}% of the CPUs "
                     "during some points (marked 'BUSY' below): their CPU timings are inflated")
    if meta.get("copy_bandwidth_gbps"):
        lines.append(f"device-to-device copy bandwidth: {meta['copy_bandwidth_gbps']:.0f} GB/s "
                     "(GB/s column: N x (score + label + grad bytes) / fwd+bwd time)")
    for r, d in meta["regimes"].items():
        lines.append(f"regime '{r}': {d}")
    return lines


NOTES = [
    "speedup vs loop = loop fwd+bwd / this fwd+bwd ('~' where either is an estimate);"
    " t / t_focal = this time / focal-loss time of the same mode (< 1: cheaper than focal loss).",
    "skipped (> budget): a single call was predicted to exceed the budget; the estimate is"
    " extrapolated (loop: timed on a subset of positives, linear in P; dense: on a subset of"
    " tiles; others: O(P*N) from the largest measured size).",
    "errors: max absolute difference of the loss and of the gradient (computed in the"
    " score dtype) against the float64 reference, or against our sorted kernel run on"
    " float64 scores ('sorted-f64') where the reference is too slow.",
]


def headline_lines(hl):
    lines = []
    for key in ("a", "b", "c"):
        h = hl.get(key)
        if h:
            lines.append(f"({key}) {h['text']}")
    return lines


def text_report(result):
    meta = result["meta"]
    cuda = bool(meta.get("copy_bandwidth_gbps"))
    out = ["", "=" * 100, "aploss_cuda benchmark", "=" * 100] + _meta_lines(meta)
    for sweep, regime, pts in _groups(result):
        out += ["", f"## {SWEEP_TITLES[sweep]}, regime '{regime}'"]
        for pt in pts:
            out += ["", point_title(pt, meta)]
            out.append(_table_text(headers(cuda, pt.get("error_vs") or "ref"), point_rows(pt, cuda, meta.get("copy_bandwidth_gbps"))))
    gr = result.get("grouped")
    if gr:
        out += ["", f"## {GROUPED_TITLE}, regime '{gr['regime']}'", ""] + _wrap(grouped_intro(gr))
        for pt in gr["points"]:
            out += ["", grouped_point_title(pt, meta)]
            out.append(_table_text(GROUPED_HEADERS, grouped_rows(pt)))
    out += [""] + (NOTES if result["points"] else []) + (GROUPED_NOTES if gr else [])
    hl = headline_lines(result.get("headline", {}))
    if hl:
        out += ["", "=" * 100, "HEADLINE CHECKS (this run)", "=" * 100] + hl
    return "\n".join(out)


def markdown_report(result):
    meta = result["meta"]
    cuda = bool(meta.get("copy_bandwidth_gbps"))
    out = [f"# aploss_cuda benchmark: {meta['device']}, {meta['date']}", ""]
    out += [f"Command: `{' '.join(['python benchmarks/run.py'] + meta['argv'])}`; wall time "
            f"{meta['wall_s']:.0f} s.", ""]
    out += ["- " + x for x in _meta_lines(meta)]
    hl = headline_lines(result.get("headline", {}))
    if hl:
        out += ["", "## Headline checks", ""] + ["- " + x for x in hl]
    for sweep, regime, pts in _groups(result):
        out += ["", f"## {SWEEP_TITLES[sweep]}, regime '{regime}'"]
        for pt in pts:
            out += ["", f"**{point_title(pt, meta)}**", ""]
            out.append(_table_md(headers(cuda, pt.get("error_vs") or "ref"), point_rows(pt, cuda, meta.get("copy_bandwidth_gbps"))))
    gr = result.get("grouped")
    if gr:
        out += ["", f"## {GROUPED_TITLE}, regime '{gr['regime']}'", "", grouped_intro(gr)]
        for pt in gr["points"]:
            out += ["", f"**{grouped_point_title(pt, meta)}**", ""]
            out.append(_table_md(GROUPED_HEADERS, grouped_rows(pt)))
    out += ["", "## Notes", ""] + ["- " + x for x in (NOTES if result["points"] else []) + (GROUPED_NOTES if gr else [])]
    if meta.get("plots"):
        out += [""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in meta["plots"]]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- headline


def _find(result, regime, n, p):
    for pt in result["points"]:
        if pt["regime"] == regime and pt["n"] == n and pt["p"] == p:
            return pt
    return None


def _row(pt, name):
    return next((r for r in pt["rows"] if r["impl"] == name), None)


def headlines(result, spec):
    meta = result["meta"]
    out = {}
    cfg = f"{meta['score_dtype']} scores, {meta['label_dtype']} labels"
    std = meta["score_dtype"] == "float32" and meta["label_dtype"] == "int64"
    dev = meta["device"]

    a = spec["a"]
    pt = _find(result, a["regime"], a["n"], a["p"])
    if pt is not None:
        s, f = _row(pt, "sorted"), _row(pt, "focal")
        ts = s and s["fwd_bwd"].get("median_s")
        tf = f and f["fwd_bwd"].get("median_s")
        if ts and tf:
            r = ts / tf
            out["a"] = dict(
                regime=a["regime"], n=a["n"], p=a["p"], ap_loss_s=ts, focal_s=tf, ratio=r,
                target="<= 1.0", passed=r <= 1.0,
                text=(f"{a['regime']} regime, {cfg}, N = {a['n']:,}, P = {a['p']:,} on {dev}: "
                      f"ap_loss (method=sorted, what 'auto' runs) fwd+bwd median {fmt_t(ts)} vs "
                      f"sigmoid focal loss fwd+bwd median {fmt_t(tf)}: ratio {r:.3f} "
                      f"(target <= 1.0: {'PASS' if r <= 1.0 else 'FAIL'})"
                      + ("" if std else " [not the headline dtypes fp32/int64]")),
            )
    b = spec["b"]
    pt = _find(result, b["regime"], b["n"], b["p"])
    if pt is not None:
        s, lp = _row(pt, "sorted"), _row(pt, "loop")
        ts = s and s["fwd_bwd"].get("median_s")
        if ts and lp:
            m = lp["fwd_bwd"]
            if m.get("status") == "measured":
                tl, how = m["median_s"], "measured"
            else:
                tl = m.get("est_s")
                how = "ESTIMATED, " + m.get("est_method", "")
            if tl:
                sp = tl / ts
                out["b"] = dict(
                    regime=b["regime"], n=b["n"], p=b["p"], ap_loss_s=ts, loop_s=tl,
                    loop_how=how, speedup=sp, target=">= 100", passed=sp >= 100,
                    text=(f"{b['regime']} regime, {cfg}, N = {b['n']:,}, P = {b['p']:,} on {dev}: "
                          f"ap_loss fwd+bwd median {fmt_t(ts)} vs per-positive loop fwd+bwd "
                          f"{fmt_t(tl)} ({how}): speedup x{sp:.0f} "
                          f"(target >= 100: {'PASS' if sp >= 100 else 'FAIL'})"),
                )
    c = grouped_headline(result)
    if c:
        out["c"] = c
    return out


# --------------------------------------------------------------------------- grouped section

GROUPED_TITLE = "Grouped vs ungrouped (group_ids)"
GROUPED_HEADERS = ["configuration", "group_ids", "groups (with a positive)", "fwd+bwd",
                   "grouped / ungrouped", "peak extra mem", "loop of per-group calls",
                   "speedup vs loop", "loss err vs loop", "grad err vs loop"]
GROUPED_NOTES = [
    "grouped section: 'grouped / ungrouped' = this configuration's fwd+bwd median / the"
    " ungrouped call's median on the same scores and labels (the goal: <= 1.3);"
    " 'loop of per-group calls' = one ungrouped ap_loss call per group with a positive on"
    " a permuted copy split by group (the permutation and split sizes prepared outside the"
    " timing), its mean over those groups, and its backward; the errors are the max"
    " absolute differences between the grouped call and that loop (the same definition).",
]
# the configurations the goal applies to (large ids are reported, not part of the goal)
GROUPED_GOAL = ("per-image", "per-class", "retrieval")


def _wrap(text, width=100):
    import textwrap

    return textwrap.wrap(text, width)


def grouped_intro(gr):
    return (f"B = {gr['images']} images, C = {gr['classes']} classes, Q = {gr['queries']} "
            f"retrieval queries (each entry's query at random). {gr['method']}. Section wall "
            f"time {gr['wall_s']:.0f} s.")


def grouped_point_title(pt, meta):
    busy = ""
    share = pt.get("other_cpu_share")
    if meta["device"].startswith("cpu") and share is not None and share > BUSY_SHARE:
        busy = f" [BUSY: other processes used {100 * share:.0f}% of the CPUs meanwhile]"
    return (f"N = {pt['n']:,} ({fmt_n(pt['n'])}), P = {pt['p']:,}, {pt['rounds']} interleaved "
            f"rounds{busy}")


def grouped_rows(pt):
    rows = []
    for e in pt["entries"]:
        ids = "-" if e["group_ids_shape"] is None else (
            f"{tuple(e['group_ids_shape'])} {e['group_ids_dtype']} over {tuple(e['view_shape'])}")
        groups = "1" if e.get("groups") is None else f"{e['groups']:,} ({e['groups_with_positive']:,})"
        rows.append([
            e["label"], ids, groups, fmt_t(e.get("grouped_median_s")),
            f"{e['ratio_vs_ungrouped']:.3f}", fmt_bytes(e.get("grouped_mem_bytes")),
            fmt_t(e.get("loop_median_s")),
            _ratio(e.get("speedup_vs_loop")),
            fmt_err(e.get("err_loss_vs_loop")), fmt_err(e.get("err_grad_vs_loop")),
        ])
    return rows


def grouped_headline(result):
    gr = result.get("grouped")
    if not gr or not gr.get("points"):
        return None
    pt = max(gr["points"], key=lambda p: p["n"])
    by = {e["name"]: e for e in pt["entries"]}
    ratios = {k: by[k]["ratio_vs_ungrouped"] for k in GROUPED_GOAL if k in by}
    if not ratios:
        return None
    target = gr.get("target_ratio", 1.3)
    worst = max(ratios.values())
    meta = result["meta"]
    text = (f"{gr['regime']} regime, {meta['score_dtype']} scores, N = {pt['n']:,}, P = {pt['p']:,} "
            f"on {meta['device']}: grouped fwd+bwd / ungrouped fwd+bwd (medians, interleaved): "
            + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
            + f" (target <= {target}: {'PASS' if worst <= target else 'FAIL'})")
    return dict(n=pt["n"], p=pt["p"], ratios=ratios, target=f"<= {target}",
                passed=worst <= target, text=text)


# --------------------------------------------------------------------------- plots


def _plot(result, sweep, xkey, xlabel, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(r, pts) for s, r, pts in _groups(result) if s == sweep]
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(6.2 * len(groups), 4.8), squeeze=False)
    for ax, (regime, pts) in zip(axes[0], groups):
        pts = sorted(pts, key=lambda p: p[xkey])
        for name in ORDER:
            xs, ys, meas = [], [], []
            label = None
            for pt in pts:
                r = _row(pt, name)
                if r is None:
                    continue
                label = r["label"]
                m = r.get("fwd_bwd", {})
                t = m.get("median_s") if m.get("status") == "measured" else m.get("est_s")
                if t:
                    xs.append(pt[xkey])
                    ys.append(t)
                    meas.append(m.get("status") == "measured")
            if not xs:
                continue
            c, mk = STYLE[name]
            ax.plot(xs, ys, color=c, lw=1.2, ls="-", alpha=0.35)
            mx = [x for x, ok in zip(xs, meas) if ok]
            my = [y for y, ok in zip(ys, meas) if ok]
            ex = [x for x, ok in zip(xs, meas) if not ok]
            ey = [y for y, ok in zip(ys, meas) if not ok]
            if mx:
                ax.plot(mx, my, color=c, marker=mk, ls="-", label=label)
            if ex:
                ax.plot(ex, ey, color=c, marker=mk, ls="--", mfc="none",
                        label=None if mx else label + " (est.)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fwd+bwd time, median [s]")
        ax.set_title(f"regime '{regime}'")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    meta = result["meta"]
    fig.suptitle(f"{title} - {meta['device_name']} ({meta['date']}); hollow markers: "
                 "skipped (> budget), extrapolated", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(result, out_dir, stem):
    meta = result["meta"]
    paths = []
    p = _plot(result, "N", "n", "N (entries)" + (", P = " + str(meta["nsweep_positives"])),
              os.path.join(out_dir, stem + "-time-vs-N.png"), "AP-loss time vs N")
    if p:
        paths.append(p)
    p = _plot(result, "P", "p", f"P (positives), N = {meta['psweep_n']:,}",
              os.path.join(out_dir, stem + "-time-vs-P.png"), "AP-loss time vs P")
    if p:
        paths.append(p)
    return paths
