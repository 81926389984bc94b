#!/usr/bin/env python
"""Work of the CUDA window sums under a key (csrc/cuda/positive_sums_cuda.cu), counted:
callgrind's instructions for one call on the emulated device (tests/simt), in this
checkout and optionally another. The emulator cannot time a GPU, and its wall time is
mostly its own per-thread cost; a count of what the kernels' bodies execute is the work.
    python scripts/callgrind_emulated_sums.py --positives 4000,32000
    python scripts/callgrind_emulated_sums.py --old-checkout /path/to/other/worktree
Each checkout's tests/ build its emulated device from its own csrc/cuda; both use the
installed aploss_cuda for the gather and rank_positives around the call. Columns: the
whole call (the ATen ops the kernel table issues, the emulator's launches, our kernels)
and our kernels' bodies alone (inclusive, every function named *_kernel in aploss::gpu).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

from callgrind_call import HELPER_C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(checkout, num_pos, helper):
    import ctypes

    sys.path.insert(0, os.path.join(checkout, "tests"))
    import operators
    import probes
    import torch
    from devices import EMULATED

    g = torch.Generator().manual_seed(0)
    n = 2 * num_pos
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[torch.randperm(n, generator=g)[:num_pos]] = 1
    keys = torch.rand(num_pos, generator=g, dtype=torch.float64)
    values = torch.rand(2, num_pos, generator=g, dtype=torch.float64)
    lib = ctypes.CDLL(helper)
    with EMULATED[0].running():  # the h100 profile
        positives, offsets, *_ = operators.rank_positives(
            operators.gather(scores, labels, None), 1, 1.0)
        def call():
            probes.positive_window_sums(positives, offsets, keys, values, 0.5, True, False)

        call()
        lib.cg_start()
        lib.cg_zero()
        call()
        lib.cg_dump(b"call")


def count(checkout, num_pos, helper, workdir):
    """(whole call, kernel bodies) instructions of one call."""
    out = os.path.join(workdir, f"cg.{abs(hash(checkout))}.{num_pos}")
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, __file__, "--child", checkout, str(num_pos), helper],
        env=dict(os.environ, OMP_NUM_THREADS="1"), check=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, cwd=workdir)
    dump = out + ".1"
    total = next(int(line.split()[1]) for line in open(dump) if line.startswith("summary:"))
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                               check=True,
                               capture_output=True, text=True).stdout
    kernels = 0
    for line in annotated.splitlines():
        match = re.match(r"\s*([\d,]+) .*aploss::gpu::\(anonymous namespace\)::\w+_kernel\(", line)
        if match:
            kernels += int(match.group(1).replace(",", ""))
    return total, kernels


def commit_of(checkout):
    return subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or checkout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positives", default="4000,32000", help="P values, comma-separated")
    parser.add_argument("--old-checkout", help="another checkout of the repository, counted first")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])
    checkouts = ([os.path.abspath(args.old_checkout)] if args.old_checkout else []) + [ROOT]
    sizes = [int(p) for p in args.positives.split(",")]
    with tempfile.TemporaryDirectory() as workdir:
        helper = os.path.join(workdir, "libcgh.so")
        source = os.path.join(workdir, "cgh.c")
        open(source, "w").write(HELPER_C)
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", helper, source], check=True)
        counts = {(c, p): count(c, p, helper, workdir) for c in checkouts for p in sizes}
    print("Instructions of one `positive_window_sums` call with keys (2 value rows, one "
          "segment) on the emulated device, h100 profile (callgrind)\n")
    print("| checkout (commit) | P | whole call | our kernels' bodies |")
    print("|---|--:|--:|--:|")
    for (checkout, num_pos), (total, kernels) in counts.items():
        print(f"| {commit_of(checkout)} | {num_pos:,} | {total:,} | {kernels:,} |")
    if args.old_checkout:
        print("\n| P | whole call, new / old | kernels' bodies, new / old |")
        print("|--:|--:|--:|")
        for num_pos in sizes:
            old, new = counts[(checkouts[0], num_pos)], counts[(ROOT, num_pos)]
            print(f"| {num_pos:,} | {new[0] / old[0]:.2f} | {new[1] / old[1]:.2f} |")


if __name__ == "__main__":
    main()
