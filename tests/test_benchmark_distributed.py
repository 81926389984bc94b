"""benchmarks/distributed_comm.py: the bytes-per-call benchmark of process_group runs,
and what it reports grows with P, not with N."""

import os
import sys

import pytest
import torch.distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import distributed_comm  # noqa: E402


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_distributed_comm_benchmark_runs():
    rows = distributed_comm.measure([20_000, 200_000], world=2, reps=1)
    small, big = rows
    assert small["positives"] == 20 and big["positives"] == 200
    # All three collectives ran, and the bytes follow P (x10 here), far below the N-sized gather.
    assert set(big["bytes_per_rank"]) == {"counts", "positives", "false_positives"}
    assert big["bytes_per_rank"]["false_positives"] == 8 * (200 + 1)
    assert big["bytes_per_rank_total"] < big["n_sized_alternative_bytes"] / 100
    assert "| 2 | 200,000 | 200 |" in distributed_comm.markdown(rows)
