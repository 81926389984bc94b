"""process_group: one exact ranking across torch.distributed ranks (gloo, CPU), compared
with one process on the concatenated inputs; and DistributedDataParallel."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import aploss_cuda
from distributed_workers import TinyDetectorHead, run_ddp, run_scenarios

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, world, payload, tmp_path, *extra):
    path = tmp_path / "payload.pt"
    torch.save(payload, path)
    mp.start_processes(
        fn, args=(world, free_port(), str(path), str(tmp_path), *extra), nprocs=world,
        join=True, start_method="spawn",
    )
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def problem(n, seed, positive_rate=0.05, ignore_rate=0.1, ties=False):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    if ties:
        scores = (scores * 2).round() / 2
    u = torch.rand(n, generator=g)
    labels = (u < positive_rate).to(torch.int64)
    labels[(u >= positive_rate) & (u < positive_rate + ignore_rate)] = -1
    return scores, labels


def split(tensors, sizes):
    return [dict(zip(tensors, parts)) for parts in zip(*(t.split(sizes) for t in tensors.values()))]


def scenario(sizes, seed, delta=1.0, interpolate=True, groups=None, **kw):
    scores, labels = problem(sum(sizes), seed, **kw)
    full = {"scores": scores, "labels": labels}
    if groups is not None:
        full["group_ids"] = groups(sum(sizes), seed)
    return {"full": full, "parts": split(full, sizes), "delta": delta, "interpolate": interpolate}


def single_process(sc):
    scores = sc["full"]["scores"].clone().requires_grad_()
    loss = aploss_cuda.ap_loss(
        scores, sc["full"]["labels"], delta=sc["delta"], interpolate=sc["interpolate"],
        group_ids=sc["full"].get("group_ids"),
    )
    loss.backward()
    return loss.detach(), scores.grad


def random_groups(n, seed):
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, 6, (n,), generator=g) * 1000003  # non-contiguous ids


SCENARIOS_2 = [
    scenario([700, 300], 1),
    scenario([1, 999], 2, delta=0.5, interpolate=False, ties=True),
    scenario([500, 500], 3, groups=random_groups),
    scenario([400, 600], 4, positive_rate=0.0),  # no positive anywhere: loss 0
]

SCENARIOS_3 = [
    scenario([600, 0, 400], 5),  # an empty rank
    scenario([300, 300, 400], 6, groups=random_groups),
    scenario([500, 200, 300], 7, delta=2.0),
]


def check_against_single_process(scenarios, results):
    world = len(results)
    for index, sc in enumerate(scenarios):
        loss, grad = single_process(sc)
        sizes = [p["scores"].numel() for p in sc["parts"]]
        for rank in range(world):
            r = results[rank][index]
            assert "error" not in r, (index, rank, r)
            # bitwise the same loss on every rank, equal to one process to rounding
            assert torch.equal(r["loss"], results[0][index]["loss"])
            torch.testing.assert_close(r["loss"], loss, rtol=1e-12, atol=1e-12)
            expected = grad.split(sizes)[rank]
            torch.testing.assert_close(r["grad"], expected, rtol=1e-9, atol=1e-12)


def test_two_ranks_match_one_process(tmp_path):
    results = spawn(run_scenarios, 2, SCENARIOS_2, tmp_path)
    check_against_single_process(SCENARIOS_2, results)
    assert float(results[0][3]["loss"]) == 0.0


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2 or not dist.is_nccl_available(),
    reason="needs 2 GPUs and nccl",
)
def test_nccl_two_gpus_match_one_process(tmp_path):
    results = spawn(run_scenarios, 2, SCENARIOS_2, tmp_path, "nccl")
    check_against_single_process(SCENARIOS_2, results)


def test_three_ranks_uneven_and_empty(tmp_path):
    results = spawn(run_scenarios, 3, SCENARIOS_3, tmp_path)
    check_against_single_process(SCENARIOS_3, results)


def test_communication_is_positive_sized(tmp_path):
    # Same positives, 10x the negatives: the bytes on the wire do not change.
    small = scenario([500, 500], 8, positive_rate=0.02)
    big = {k: v for k, v in small.items()}
    pad = 4500
    big["parts"] = [
        {
            "scores": torch.cat([p["scores"], torch.full((pad,), -3.0, dtype=torch.float64)]),
            "labels": torch.cat([p["labels"], torch.zeros(pad, dtype=torch.int64)]),
        }
        for p in small["parts"]
    ]
    results = spawn(run_scenarios, 2, [small, big], tmp_path)
    assert results[0][0]["bytes"] == results[0][1]["bytes"]
    positives = max(int((p["labels"] == 1).sum()) for p in small["parts"])
    total = int((small["full"]["labels"] == 1).sum())
    assert results[0][0]["bytes"]["positives"] == 16 * positives
    assert results[0][0]["bytes"]["false_positives"] == 8 * (total + 1)


def test_an_invalid_rank_does_not_hang_the_others(tmp_path):
    bad = scenario([100, 100], 9)
    bad["parts"][1]["labels"] = bad["parts"][1]["labels"].clone()
    bad["parts"][1]["labels"][5] = 3
    nan = scenario([100, 100], 10)
    nan["parts"][0]["scores"] = nan["parts"][0]["scores"].clone()
    nan["parts"][0]["scores"][(nan["parts"][0]["labels"] == 0).nonzero()[0]] = float("nan")
    results = spawn(run_scenarios, 2, [bad, nan, scenario([50, 50], 11)], tmp_path)
    assert results[1][0]["error"] == "ValueError" and "labels" in results[1][0]["message"]
    assert results[0][0]["error"] == "RemoteRankError"
    assert results[0][1]["error"] == "ValueError" and "finite" in results[0][1]["message"]
    assert results[1][1]["error"] == "RemoteRankError"
    assert "error" not in results[0][2]  # the group still works afterwards


def test_ddp_matches_single_process_on_the_global_batch(tmp_path):
    torch.manual_seed(0)
    model = TinyDetectorHead().double()
    features = torch.randn(64, 6, dtype=torch.float64)
    labels = (torch.rand(64, 3) < 0.1).to(torch.int64)
    labels[0, 0] = 1
    state = {k: v.float() for k, v in model.state_dict().items()}
    model = TinyDetectorHead()
    model.load_state_dict(state)
    features = features.float()
    loss = aploss_cuda.ap_loss(model(features), labels)
    loss.backward()
    sizes = [40, 24]
    parts = [{"features": f, "labels": y} for f, y in zip(features.split(sizes), labels.split(sizes))]
    results = spawn(run_ddp, 2, {"state": state, "parts": parts}, tmp_path)
    for r in results:
        torch.testing.assert_close(r["loss"], loss.detach())
        for name, p in model.named_parameters():
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-4, atol=1e-6)


def test_process_group_needs_initialized_distributed():
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    with pytest.raises(RuntimeError, match="not initialized"):
        aploss_cuda.ap_loss(torch.randn(4), torch.ones(4), process_group=object())
