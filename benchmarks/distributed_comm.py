#!/usr/bin/env python
"""Bytes communicated per ap_loss call under process_group, against N.

Spawns W gloo processes on this machine (CPU tensors), runs ap_loss(..., process_group)
forward+backward on each rank's share of an init-regime problem (P = N/1000 positives,
float32 scores, int64 labels) and records what each collective moved
(aploss_cuda.distributed.last_call_bytes) next to what gathering the scores and labels
would move (the N-sized alternative), plus the median fwd+bwd time against one process
on the same global batch.

    python benchmarks/distributed_comm.py                 # W = 2, N = 100k .. 4M
    python benchmarks/distributed_comm.py --world 3 --sizes 1M,4M
"""

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


DESCRIPTION = (
    "Each rank holds half of an init-regime problem (fp32 scores, int64 labels, P = N/1000). "
    "Bytes are what each rank puts into each collective of one ap_loss forward "
    "(all_gather of the counts, all_gather of the positives, all_reduce of fp); the "
    "N-sized alternative is gathering every rank's scores and labels. Times: median "
    "fwd+bwd, one thread per process, the distributed one including gloo's latency."
)


def parse_count(text):
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def problem(n, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g) * 0.5 - 4.6
    labels = torch.zeros(n, dtype=torch.int64)
    positives = torch.randperm(n, generator=g)[: max(1, n // 1000)]
    labels[positives] = 1
    scores[positives] += 1.0
    return scores, labels


def _import_aploss():
    """The installed aploss_cuda, or the checkout's (extension built in place) when none
    is installed. Never put the checkout first on sys.path: spawned ranks inherit it and
    would import the source tree, which has no compiled _C after `pip install .`."""
    try:
        import aploss_cuda
    except ModuleNotFoundError as e:
        if e.name != "aploss_cuda":
            raise
        sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import aploss_cuda
    return aploss_cuda


def _worker(rank, world, port, sizes, reps, out_dir):
    aploss_cuda = _import_aploss()

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rows = []
    for n in sizes:
        scores, labels = problem(n, seed=n)
        mine = slice(rank * n // world, (rank + 1) * n // world)
        x_local, y_local = scores[mine].contiguous(), labels[mine].contiguous()
        times = []
        for _ in range(reps):
            x = x_local.clone().requires_grad_()
            dist.barrier()
            t0 = time.perf_counter()
            aploss_cuda.ap_loss(x, y_local, process_group=dist.group.WORLD).backward()
            times.append(time.perf_counter() - t0)
        rows.append({"n": n, "bytes": dict(aploss_cuda.distributed.last_call_bytes),
                     "time_s": statistics.median(times),
                     "positives": int((labels == 1).sum())})
    torch.save(rows, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()  # no rank tears gloo down while a peer still talks to it
    dist.destroy_process_group()


def single_process_time(n, reps):
    aploss_cuda = _import_aploss()

    torch.set_num_threads(1)
    scores, labels = problem(n, seed=n)
    times = []
    for _ in range(reps):
        x = scores.clone().requires_grad_()
        t0 = time.perf_counter()
        aploss_cuda.ap_loss(x, labels).backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(sizes, world=2, reps=5):
    """One row per N: bytes per rank of each collective, totals, times."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(_worker, args=(world, free_port(), sizes, reps, out_dir),
                           nprocs=world, join=True, start_method="spawn")
        ranks = [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(world)]
    rows = []
    for i, n in enumerate(sizes):
        row = ranks[0][i]
        sent = sum(row["bytes"].values())
        rows.append({
            "world": world,
            "n": n,
            "positives": row["positives"],
            "bytes_per_rank": row["bytes"],
            "bytes_per_rank_total": sent,
            # gathering every rank's fp32 scores and int64 labels instead:
            "n_sized_alternative_bytes": (n // world) * (4 + 8),
            "distributed_fwd_bwd_s": max(r[i]["time_s"] for r in ranks),
            "single_process_fwd_bwd_s": single_process_time(n, reps),
        })
    return rows


def markdown(rows):
    lines = [
        "| W | N | P | counts B | positives B | fp all_reduce B | total B/rank | N-sized gather B/rank | fwd+bwd W ranks (1 thread each) | fwd+bwd 1 process (1 thread) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        b = r["bytes_per_rank"]
        lines.append(
            f"| {r['world']} | {r['n']:,} | {r['positives']:,} | {b.get('counts', 0)} | "
            f"{b.get('positives', 0):,} | {b.get('false_positives', 0):,} | "
            f"{r['bytes_per_rank_total']:,} | {r['n_sized_alternative_bytes']:,} | "
            f"{r['distributed_fwd_bwd_s'] * 1e3:.1f} ms | {r['single_process_fwd_bwd_s'] * 1e3:.1f} ms |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--sizes", default="100k,1M,4M")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    rows = measure([parse_count(s) for s in args.sizes.split(",")], args.world, args.reps)
    table = markdown(rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return rows


if __name__ == "__main__":
    main()
