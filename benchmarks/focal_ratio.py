#!/usr/bin/env python
"""The strict form of the CPU headline: ap_loss fwd+bwd against sigmoid focal loss
fwd+bwd over the SAME full tensor (no masking of ignored entries for focal, which
makes focal as cheap as it can be), medians measured in one process.

    python benchmarks/focal_ratio.py [--n 4000000] [--p 4000] [--reps 9] [--threads T]
"""

import argparse
import statistics
import time

import torch

import aploss_cuda

try:
    from torchvision.ops import sigmoid_focal_loss
except ImportError:  # the same formula as torchvision's

    def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="sum"):
        p = torch.sigmoid(inputs)
        ce = torch.nn.functional.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * ((1 - p_t) ** gamma)
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
        return loss.sum()


def median_ms(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4_000_000, help="entries (default 4,000,000)")
    parser.add_argument("--p", type=int, default=4_000, help="positives (default 4,000)")
    parser.add_argument("--reps", type=int, default=9, help="timed repetitions per implementation")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(args.n, generator=g) * 0.5 - 4.6  # init regime: nothing pruned
    labels = torch.zeros(args.n, dtype=torch.int64)
    labels[torch.randperm(args.n, generator=g)[: args.p]] = 1
    targets = (labels == 1).float()

    def ap():
        x = scores.clone().requires_grad_(True)
        aploss_cuda.ap_loss(x, labels).backward()

    def focal():
        x = scores.clone().requires_grad_(True)
        sigmoid_focal_loss(x, targets, alpha=0.25, gamma=2, reduction="sum").backward()

    ap_ms, focal_ms = median_ms(ap, args.reps), median_ms(focal, args.reps)
    print(
        f"N={args.n:,} P={args.p:,} threads={torch.get_num_threads()} fp32 scores, int64 labels: "
        f"ap_loss fwd+bwd {ap_ms:.1f} ms, sigmoid focal loss fwd+bwd {focal_ms:.1f} ms "
        f"(both include one clone of the scores), ratio {ap_ms / focal_ms:.2f}"
    )


if __name__ == "__main__":
    main()
