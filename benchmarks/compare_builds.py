#!/usr/bin/env python
"""Two builds of the library against each other, interleaved: the same fwd+bwd points timed
in alternating child processes, one per build and round, so that a change of the
machine's load slows both alike; each child keeps its least time per point (another
process's burst only adds time), and the report gives each build's median over the
rounds and the ratio. The children use only the public API, so any two builds compare:

    python benchmarks/compare_builds.py --old /path/to/old/site-packages --new installed \\
        --rounds 5 --out benchmarks/results/old-vs-new.md

`installed` is the package this interpreter imports. Points (--points passes, the
default): ap_loss at N = 4M (P = 4,000 and 40,000; int64 and int8 labels), rank_sort_loss
and alrp_loss at N = 4M (P = 4,000 and 40,000), the three losses at N = 50,000 with
P = 40,000 (the P-sized work: sorts and the positive stage, the passes small), and the
three losses and BCE-with-logits at N = 1,000 (the fixed cost). --points grouped: ap_loss
at N = 4M, P = 4,000, one ranking and the grouped section's groupings (bench_grouped.py: 8
and 16 images, 80 classes, 4,096 queries with full-size ids, the same ids x 1,000,003),
with each build's ratio to its own ungrouped call. Float32 scores in the init regime, or
with --regime trained (grouped points) a partly trained network's (common/inputs.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, statistics, sys, time
import torch
sys.path.insert(0, sys.argv[1])
from common.inputs import make_problem
import aploss_cuda

def least_s(f, calls):
    # The least disturbed call: on a shared machine another process's burst only adds time.
    f()
    times = []
    for _ in range(calls):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return min(times)

out = {}
if sys.argv[2] == "grouped":
    n, p = 4_000_000, 4000
    s, l = make_problem(n, p, sys.argv[3], device="cpu", seed=0)
    x = s.requires_grad_()
    seed = torch.ones(())
    query = torch.randint(0, 4096, (n,), generator=torch.Generator().manual_seed(1))
    groupings = {
        "one ranking": (x, l, None),
        "per image, 8 images": (x.view(8, -1, 80), l.view(8, -1, 80), torch.arange(8)[:, None, None]),
        "per image, 16 images": (x.view(16, -1, 80), l.view(16, -1, 80), torch.arange(16)[:, None, None]),
        "per class, 80 classes": (x.view(-1, 80), l.view(-1, 80), torch.arange(80)),
        "4,096 queries, full-size ids": (x, l, query),
        "4,096 queries, ids x 1,000,003": (x, l, query * 1_000_003),
    }
    for name, (scores, labels, ids) in groupings.items():
        def call(scores=scores, labels=labels, ids=ids):
            x.grad = None
            aploss_cuda.ap_loss(scores, labels, group_ids=ids).backward(seed)
        out[f"ap_loss, N = {n:,}, P = {p:,}, {name}"] = least_s(call, 5)
    print(json.dumps(out))
    sys.exit(0)
for n, p, label, calls in [(4_000_000, 4000, "int64", 7), (4_000_000, 40000, "int64", 5),
                           (4_000_000, 4000, "int8", 7), (4_000_000, 40000, "int8", 5),
                           (50_000, 40000, "int64", 21), (1000, 10, "int64", 2000)]:
    s, l = make_problem(n, p, "init", device="cpu", seed=0, label_dtype=getattr(torch, label))
    x = s.requires_grad_()
    targets = torch.where(l == 1, torch.rand(n), l.clamp(min=-1).float())
    regression = torch.rand(p)
    seed = torch.ones(())
    losses = {"ap_loss": lambda: aploss_cuda.ap_loss(x, l)}
    if label == "int64":
        losses["rank_sort_loss"] = lambda: aploss_cuda.rank_sort_loss(x, targets)
        losses["alrp_loss"] = lambda: aploss_cuda.alrp_loss(x, l, regression)[0]
    if n == 1000:
        y = l.clamp(min=0).float()
        losses["bce"] = lambda: torch.nn.functional.binary_cross_entropy_with_logits(
            x, y, reduction="sum")
    for name, loss in losses.items():
        def call(loss=loss):
            x.grad = None
            loss().backward(seed)
        out[f"{name}, N = {n:,}, P = {p:,}, {label} labels"] = least_s(call, calls)
print(json.dumps(out))
"""


def child(site, threads, points, regime):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if site != "installed":
        env["PYTHONPATH"] = site
    proc = subprocess.run([sys.executable, "-P", "-c", CHILD, HERE, points, regime], env=env,
                          cwd=HERE,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="site-packages of the old build, or 'installed'")
    ap.add_argument("--new", default="installed", help="the same for the new build")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--points", choices=["passes", "grouped"], default="passes")
    ap.add_argument("--regime", choices=["init", "trained"], default="init",
                    help="scores of the grouped points (the passes points are init)")
    ap.add_argument("--out", help="Markdown file to write")
    args = ap.parse_args()
    samples = {"old": [], "new": []}
    for _ in range(args.rounds):
        for build in ("old", "new"):
            samples[build].append(child(getattr(args, build), args.threads, args.points,
                                        args.regime))
    points = list(samples["new"][0])
    regime = f", {args.regime} regime" if args.points == "grouped" else ""
    lines = [f"# Two builds interleaved: {args.rounds} rounds, {args.threads} threads{regime}", "",
             f"old: `{args.old}`; new: `{args.new}`. Each cell: the median over the rounds of "
             "one child process's least fwd+bwd time over its calls; ratio: new / old.", "",
             "| point | old | new | new / old |", "|---|--:|--:|--:|"]
    for point in points:
        old = [s[point] for s in samples["old"] if point in s]
        new = [s[point] for s in samples["new"]]
        if not old:
            continue
        o, n = statistics.median(old), statistics.median(new)
        fmt = (lambda t: f"{t * 1e6:.0f} us") if o < 1e-3 else (lambda t: f"{t * 1e3:.1f} ms")
        lines.append(f"| {point} | {fmt(o)} | {fmt(n)} | {n / o:.2f} |")
    if args.points == "grouped":
        lines += ["", "Each grouping against the same build's one ranking: the median over the "
                  "rounds of the per-round ratio.", "",
                  "| grouping | old: grouped / one ranking | new: grouped / one ranking |",
                  "|---|--:|--:|"]
        one = points[0]
        for point in points[1:]:
            ratio = {b: statistics.median(r[point] / r[one] for r in samples[b]) for b in samples}
            lines.append(f"| {point.split(', ', 3)[-1]} | {ratio['old']:.2f} | {ratio['new']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(dict(args=vars(args), samples=samples), f, indent=1)


if __name__ == "__main__":
    main()
