"""Where one ap_loss forward + backward spends its time on the GPU: every kernel's device
time (torch.profiler, CUDA activity) and the whole call's time (CUDA events, median of
rounds) at the two points the CUDA budget names, in the init regime (float32 scores,
int64 labels, nothing pruned): N = 4M, P = 4,000 and N = 98.2M (16 images x 76,725
anchors x 80 classes), P = 2,000; beside torch's sigmoid focal loss at the same N and the
memory floor (reading scores and labels once and writing the gradient once, 16 bytes per
entry, at the device-to-device copy bandwidth measured here). scripts/gpu_check.sh runs it.

  python -P scripts/gpu_kernel_times.py OUT.md [--points 4M:4000,98.2M:2000] [--rounds 20]
"""

import argparse
import collections
import os
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
from common.inputs import make_problem, parse_count  # noqa: E402

import aploss_cuda  # noqa: E402


def event_ms(fn, rounds):
    """Median milliseconds of fn() by CUDA events, after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(nbytes, rounds):
    """Device-to-device copy bandwidth, bytes per second (read + write)."""
    src = torch.ones(nbytes // 2, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = event_ms(lambda: dst.copy_(src), rounds)
    return nbytes / (ms / 1e3)


def kernel_table(fn):
    """{kernel name: (launches, total device microseconds)} of one fn() call."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    table = collections.defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            table[e.name][0] += 1
            table[e.name][1] += e.device_time_total
    return table


def short(name, width=70):
    name = name.replace("aploss::gpu::", "").replace("(anonymous namespace)::", "")
    return name if len(name) <= width else name[: width - 1] + "…"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="markdown file to write")
    ap.add_argument("--points", default="4M:4000,98.2M:2000", help="N:P pairs")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    from torchvision.ops import sigmoid_focal_loss

    lines = [f"# ap_loss on {torch.cuda.get_device_name()}: kernels and the whole call", "",
             f"torch {torch.__version__}; init regime, float32 scores, int64 labels; times "
             f"are medians of {args.rounds} CUDA-event rounds; kernels from one profiled call.", ""]
    for point in args.points.split(","):
        n_text, p_text = point.split(":")
        n, p = parse_count(n_text), parse_count(p_text)
        scores, labels = make_problem(n, p, "init", device="cuda", seed=0)
        x = scores.requires_grad_()
        floor_ms = 16 * n / copy_bandwidth(16 * n, args.rounds) * 1e3

        def ours():
            x.grad = None
            aploss_cuda.ap_loss(x, labels).backward()

        valid = labels >= 0
        targets = labels.clamp(min=0).to(x.dtype)

        def focal():
            x.grad = None
            sigmoid_focal_loss(x[valid], targets[valid], reduction="sum").backward()

        ours_ms, focal_ms = event_ms(ours, args.rounds), event_ms(focal, args.rounds)
        table = kernel_table(ours)
        lines += [f"## N = {n:,}, P = {p:,}", "",
                  f"ap_loss forward + backward: {ours_ms * 1e3:,.0f} us; sigmoid focal loss "
                  f"(non-ignored entries, as RetinaNet): {focal_ms * 1e3:,.0f} us "
                  f"(ratio {ours_ms / focal_ms:.2f}); memory floor {floor_ms * 1e3:,.0f} us "
                  f"(ratio {ours_ms / floor_ms:.1f}).", "",
                  "| kernel | launches | device time us |", "|---|--:|--:|"]
        for name, (count, us) in sorted(table.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"| `{short(name)}` | {count} | {us:,.1f} |")
        lines += [f"| all | {sum(c for c, _ in table.values())} | "
                  f"{sum(us for _, us in table.values()):,.1f} |", ""]
        del scores, labels, x, valid, targets
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
