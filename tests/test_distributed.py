"""process_group: one exact ranking across torch.distributed ranks (gloo, CPU), compared
with one process on the concatenated inputs, for ap_loss, rank_sort_loss and alrp_loss;
and DistributedDataParallel."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import aploss_cuda
from distributed_workers import TinyDetectorHead, evaluate, run_ddp, run_scenarios

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
    """Each rank's part: the entry-shaped tensors split along dim 0, the regression losses
    (one per positive, row-major) by the rank's positive count."""
    entries = {k: v for k, v in tensors.items() if k != "regression_losses"}
    parts = [dict(zip(entries, p)) for p in zip(*(t.split(sizes) for t in entries.values()))]
    if "regression_losses" in tensors:
        counts = [int((p["labels"] == 1).sum()) for p in parts]
        for p, losses in zip(parts, tensors["regression_losses"].split(counts)):
            p["regression_losses"] = losses
    return parts


def scenario(sizes, seed, delta=1.0, interpolate=True, groups=None, **kw):
    scores, labels = problem(sum(sizes), seed, **kw)
    full = {"scores": scores, "labels": labels}
    if groups is not None:
        full["group_ids"] = groups(sum(sizes), seed)
    return {"full": full, "parts": split(full, sizes), "delta": delta, "interpolate": interpolate}


def family_scenario(loss, sizes, seed, delta=1.0, groups=None, columns=None, no_positive_on=None,
                    dtype=torch.float64, **kw):
    """rank_sort_loss (targets: IoUs in {0.25, 0.5, 0.75, 1}, so with ties) or alrp_loss
    (labels and one regression loss per positive); `columns`: 2-D (rows, columns) inputs
    split by rows; `no_positive_on`: a rank whose part has no positive."""
    width = columns or 1
    scores, labels = problem(sum(sizes) * width, seed, **kw)
    if no_positive_on is not None:
        start = sum(sizes[:no_positive_on]) * width
        part = labels[start : start + sizes[no_positive_on] * width]
        part[part == 1] = 0
    g = torch.Generator().manual_seed(seed + 2)
    full = {"scores": scores.to(dtype)}
    if loss == "rank_sort_loss":
        iou = torch.randint(1, 5, labels.shape, generator=g).to(dtype) / 4
        full["targets"] = torch.where(labels == 1, iou, labels.to(dtype))
    else:
        full["labels"] = labels
        positives = int((labels == 1).sum())
        full["regression_losses"] = torch.rand(positives, generator=g).to(dtype)
    if columns is not None:
        for name in ("scores", "targets", "labels"):
            if name in full:
                full[name] = full[name].view(-1, columns)
    if groups is not None:  # one id per row
        full["group_ids"] = groups(sum(sizes), seed).view(-1, *[1] * (full["scores"].dim() - 1))
    return {"loss": loss, "full": full, "parts": split(full, sizes), "delta": delta}


def single_process(sc):
    return evaluate(sc, sc["full"])


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
    """Every output bitwise the same on every rank and equal, to rounding, to one process
    on the concatenated inputs; each rank's gradients its slices of that process's."""
    world = len(results)
    for index, sc in enumerate(scenarios):
        outputs, grads = single_process(sc)
        for rank in range(world):
            r = results[rank][index]
            assert "error" not in r, (index, rank, r)
            assert r["outputs"].keys() == outputs.keys()
            for name, value in outputs.items():
                assert torch.equal(r["outputs"][name], results[0][index]["outputs"][name])
                torch.testing.assert_close(r["outputs"][name], value, **tolerance(value, 1e-12))
            part = sc["parts"][rank]
            assert r["grads"].keys() == grads.keys()
            for name, grad in grads.items():
                expected = grad.split([p[name].shape[0] for p in sc["parts"]])[rank]
                assert r["grads"][name].shape == part[name].shape
                torch.testing.assert_close(r["grads"][name], expected, **tolerance(grad, 1e-9))


def tolerance(value, rtol):
    """float64: tight (only the order of pass 1's sums differs); else torch's defaults."""
    return {"rtol": rtol, "atol": 1e-12} if value.dtype == torch.float64 else {}


def test_two_ranks_match_one_process(tmp_path):
    results = spawn(run_scenarios, 2, SCENARIOS_2, tmp_path)
    check_against_single_process(SCENARIOS_2, results)
    assert float(results[0][3]["outputs"]["loss"]) == 0.0


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


FAMILY_2 = [
    family_scenario("rank_sort_loss", [700, 300], 21),
    family_scenario("rank_sort_loss", [500, 500], 22, delta=0.5, ties=True, groups=random_groups),
    family_scenario("rank_sort_loss", [300, 200], 23, columns=3, groups=random_groups),  # 2-D
    family_scenario("rank_sort_loss", [400, 600], 24, no_positive_on=0),
    family_scenario("rank_sort_loss", [400, 600], 25, positive_rate=0.0),  # none anywhere
    family_scenario("alrp_loss", [700, 300], 26),
    family_scenario("alrp_loss", [1, 999], 27, delta=0.5, ties=True),
    family_scenario("alrp_loss", [500, 500], 28, groups=random_groups),
    family_scenario("alrp_loss", [300, 200], 29, columns=3, ties=True, no_positive_on=1),
    family_scenario("alrp_loss", [500, 500], 30, dtype=torch.float32),
    family_scenario("alrp_loss", [400, 600], 31, positive_rate=0.0),  # none anywhere
]

FAMILY_3 = [
    family_scenario("rank_sort_loss", [600, 0, 400], 32),  # an empty rank
    family_scenario("rank_sort_loss", [300, 300, 400], 33, ties=True, groups=random_groups,
                    no_positive_on=2),
    family_scenario("alrp_loss", [300, 300, 400], 34, ties=True, groups=random_groups,
                    no_positive_on=1),
    family_scenario("alrp_loss", [500, 0, 500], 35, delta=2.0),  # an empty rank
]


def test_family_two_ranks_match_one_process(tmp_path):
    results = spawn(run_scenarios, 2, FAMILY_2, tmp_path)
    check_against_single_process(FAMILY_2, results)
    for index in (4, 10):  # no positive anywhere: every output 0
        assert all(float(v) == 0.0 for v in results[0][index]["outputs"].values())
    # Score, group id and the target / regression loss: 24 bytes per positive.
    for index in (0, 5):
        positives = max(count_positives(p) for p in FAMILY_2[index]["parts"])
        assert results[0][index]["bytes"]["positives"] == 24 * positives


def count_positives(part):
    if "targets" in part:
        return int((part["targets"] > 0).sum())
    return int((part["labels"] == 1).sum())


def test_family_three_ranks_uneven_and_empty(tmp_path):
    results = spawn(run_scenarios, 3, FAMILY_3, tmp_path)
    check_against_single_process(FAMILY_3, results)


def test_family_invalid_rank_raises_on_every_rank(tmp_path):
    def broken(sc, rank, name, edit):
        sc["parts"][rank][name] = edit(sc["parts"][rank][name].clone())
        return sc

    def set_at(index, value):
        def edit(t):
            t.view(-1)[index] = value
            return t
        return edit

    rs, alrp = "rank_sort_loss", "alrp_loss"
    bad = [
        (1, broken(family_scenario(rs, [100, 100, 100], 40), 1, "targets", set_at(7, 1.5))),
        (2, broken(family_scenario(rs, [100, 100, 100], 41), 2, "targets",
                   set_at(3, float("nan")))),
        (2, broken(family_scenario(alrp, [100, 100, 100], 42), 2, "regression_losses",
                   lambda t: t[:-1])),  # one regression loss short
        (0, broken(family_scenario(alrp, [100, 100, 100], 43), 0, "regression_losses",
                   lambda t: torch.cat([t, t[:1]]))),  # one too many
        (1, broken(family_scenario(alrp, [100, 100, 100], 44), 1, "regression_losses",
                   set_at(0, -1.0))),
    ]
    scenarios = [sc for _, sc in bad] + [family_scenario(alrp, [50, 50, 50], 45)]
    results = spawn(run_scenarios, 3, scenarios, tmp_path)
    for index, (faulty, _) in enumerate(bad):
        expected_word = "targets" if index < 2 else "regression_losses"
        for rank in range(3):
            r = results[rank][index]
            if rank == faulty:
                assert r["error"] == "ValueError" and expected_word in r["message"], r
            else:
                assert r["error"] == "RemoteRankError" and f"[{faulty}]" in r["message"], r
    assert all("error" not in results[rank][-1] for rank in range(3))  # still works


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
    with pytest.raises(RuntimeError, match="rank_sort_loss: .*not initialized"):
        aploss_cuda.RankSortLoss()(torch.randn(4), torch.ones(4), process_group=object())
    with pytest.raises(RuntimeError, match="alrp_loss: .*not initialized"):
        aploss_cuda.alrp_loss(torch.randn(4), torch.ones(4), torch.zeros(4), process_group=object())
