#!/usr/bin/env python
"""Instructions per call of each loss at N = 1,000 (the fixed cost), counted by callgrind,
in one or more builds: a count is exact and does not move with the machine's load.

    python scripts/callgrind_call.py                          # the installed aploss_cuda
    python scripts/callgrind_call.py --old /tmp/old_site      # and another build's

The driver re-runs itself under `valgrind --tool=callgrind --instr-atstart=no` once per
build. The child imports torch, starts instrumentation (a client request through a tiny C
helper built here), and for each point calls it 5 times, zeroes the counters, calls it 20
times and dumps: the dump's total / 20 is one call with everything around it (Python,
dispatcher, autograd, forward and backward).
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

HELPER_C = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char* what) { CALLGRIND_DUMP_STATS_AT(what); }
"""
POINTS = ("ap_loss", "rank_sort_loss", "alrp_loss", "ap_loss, no_grad")
CALLS = 20


def child(helper):
    import ctypes

    import torch

    import aploss_cuda

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n = 1000
    scores = torch.randn(n, generator=g)
    labels = (torch.rand(n, generator=g) < 0.01).long()
    labels[0] = 1
    targets = torch.where(labels == 1, torch.rand(n, generator=g), torch.zeros(n))
    regression = torch.rand(int(labels.sum()), generator=g)
    x = scores.clone().requires_grad_(True)

    def no_grad():
        with torch.no_grad():
            aploss_cuda.ap_loss(scores, labels)

    calls = {
        "ap_loss": lambda: aploss_cuda.ap_loss(x, labels).backward(),
        "rank_sort_loss": lambda: aploss_cuda.rank_sort_loss(x, targets).backward(),
        "alrp_loss": lambda: aploss_cuda.alrp_loss(x, labels, regression)[0].backward(),
        "ap_loss, no_grad": no_grad,
    }
    lib = ctypes.CDLL(helper)
    lib.cg_start()
    for i, point in enumerate(POINTS):
        for _ in range(5):
            calls[point]()
        lib.cg_zero()
        for _ in range(CALLS):
            calls[point]()
        lib.cg_dump(str(i).encode())


def count(build, helper, workdir):
    """{point: instructions per call} of one build (a site-packages path or 'installed')."""
    out = os.path.join(workdir, f"cg.{abs(hash(build))}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if build != "installed":
        env["PYTHONPATH"] = build + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, __file__, "--child", helper],
        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
    )
    counts = {}
    for path in glob.glob(out + ".*"):
        text = open(path).read()
        trigger = next(line for line in text.splitlines() if line.startswith("desc: Trigger"))
        total = next(line for line in text.splitlines() if line.startswith("summary:"))
        point = POINTS[int(trigger.rsplit(":", 1)[1].strip().split()[0])]
        counts[point] = int(total.split()[1]) / CALLS
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", help="another build's site-packages, counted first")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    with tempfile.TemporaryDirectory() as workdir:
        helper = os.path.join(workdir, "libcgh.so")
        source = os.path.join(workdir, "cgh.c")
        open(source, "w").write(HELPER_C)
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", helper, source], check=True)
        builds = ([args.old] if args.old else []) + ["installed"]
        counts = {build: count(build, helper, workdir) for build in builds}
    print("Instructions per call (callgrind), N = 1,000, P = 10, one thread, forward + "
          "backward unless no_grad\n")
    print("| point | " + " | ".join(builds) + (" | new / old |" if args.old else " |"))
    print("|---|" + "--:|" * (len(builds) + (1 if args.old else 0)))
    for point in POINTS:
        cells = [f"{counts[b][point]:,.0f}" for b in builds]
        if args.old:
            cells.append(f"{counts['installed'][point] / counts[args.old][point]:.3f}")
        print(f"| {point} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
