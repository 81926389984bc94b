"""Section 'distributed': what ap_loss(..., process_group=...) sends per call, against N.

W gloo processes on this machine (CPU tensors, one thread each) each hold 1/W of an
init-regime problem (P = N/1000). For one fwd+bwd call, common/collectives.py records
every collective and the bytes of the tensor this rank puts in; the N-sized alternative
is gathering every rank's scores and labels. Times: per round, one distributed call on
all ranks (its time: the slowest rank's), then one single-process call of one thread on
the whole problem on rank 0 while the others wait; medians over the rounds.
"""

import json
import os
import statistics
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common.collectives import CollectiveBytes
from common.inputs import make_problem, positives_for
from common.tables import fmt_time, markdown_table
from common.timing import fwd_bwd, timed

WORLD = 2


def _worker(rank, world, sizes, rounds, folder):
    import aploss_cuda

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=world)
    distributed = lambda s, y: aploss_cuda.ap_loss(s, y, process_group=dist.group.WORLD)
    rows = []
    for n in sizes:
        p = positives_for(n, "N/1000")
        scores, labels = make_problem(n, p, "init", device="cpu", seed=n)
        mine = slice(rank * n // world, (rank + 1) * n // world)
        local = scores[mine].clone().requires_grad_(), labels[mine].clone()
        scores.requires_grad_()
        with CollectiveBytes() as meter:
            fwd_bwd(distributed, *local)  # also the warm-up
        if rank == 0:
            fwd_bwd(aploss_cuda.ap_loss, scores, labels)
        distributed_s, single_s = [], []
        for _ in range(rounds):
            dist.barrier()
            distributed_s.append(timed(lambda: fwd_bwd(distributed, *local))[0])
            if rank == 0:
                single_s.append(timed(lambda: fwd_bwd(aploss_cuda.ap_loss, scores, labels))[0])
            dist.barrier()
        rows.append(dict(n=n, p=p, calls=meter.calls, distributed_s=distributed_s,
                         single_s=single_s))
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump(rows, f)
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()


def run(cfg, progress):
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_worker, args=(WORLD, cfg.distributed_sizes, cfg.rounds, folder),
                           nprocs=WORLD, join=True, start_method="spawn")
        ranks = []
        for r in range(WORLD):
            with open(os.path.join(folder, f"rank{r}.json")) as f:
                ranks.append(json.load(f))
    rows = []
    for i, row in enumerate(ranks[0]):
        slowest = [max(times) for times in zip(*(rank[i]["distributed_s"] for rank in ranks))]
        rows.append(dict(world=WORLD, n=row["n"], p=row["p"], calls=row["calls"],
                         bytes_per_rank=sum(size for _, size in row["calls"]),
                         # float32 scores and int64 labels
                         n_sized_bytes_per_rank=row["n"] // WORLD * (4 + 8),
                         distributed_median_s=statistics.median(slowest),
                         single_process_median_s=statistics.median(row["single_s"])))
    progress.step("distributed")
    return dict(rows=rows)


def markdown(section):
    headers = ["W", "N", "P", "collectives of one call (bytes per rank)", "total bytes per rank",
               "gathering scores and labels instead", f"fwd+bwd, {WORLD} ranks",
               "fwd+bwd, 1 process"]
    rows = [[r["world"], f"{r['n']:,}", f"{r['p']:,}",
             ", ".join(f"{op} {size:,}" for op, size in r["calls"]), f"{r['bytes_per_rank']:,}",
             f"{r['n_sized_bytes_per_rank']:,}", fmt_time(r["distributed_median_s"]),
             fmt_time(r["single_process_median_s"])] for r in section["rows"]]
    method = __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
    return "\n".join(["## process_group: bytes per call", "", method, "",
                      markdown_table(headers, rows), ""])
