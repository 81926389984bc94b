"""The fixed cost of one call on a GPU, in launches, host synchronisations and
allocations, held to a budget on every commit (tests/call_cost.py says how each is
counted): at small and medium N a GPU call costs what the host issues, not what the
kernels compute. Forward and backward of one ungrouped ranking, float32 scores:

- ap_loss: at most 12 launches, 1 host synchronisation, 12 allocations, and no N-sized
  allocation but the gradient and the entries' packed classes;
- rank_sort_loss, alrp_loss: at most 16 launches and 1 host synchronisation;
- more positives than the one-block sort holds (16,384 on an H100, 512 on the emulated
  small GPU): at most 24 launches.
"""

import collections
import dataclasses

import pytest
import torch
from call_cost import emulated_cost, gpu_cost
from devices import CUDA, EMULATED

import aploss_cuda


@dataclasses.dataclass(frozen=True)
class Budget:
    launches: int
    host_syncs: int
    allocations: int = None  # None: not budgeted


BUDGETS = {
    "ap_loss": Budget(12, 1, 12),
    "rank_sort_loss": Budget(16, 1),
    "alrp_loss": Budget(16, 1),
}
LARGE_P_LAUNCHES = 24


def problem(loss, n, num_pos, device):
    g = torch.Generator().manual_seed(n + num_pos)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[torch.randperm(n, generator=g)[:num_pos]] = 1
    scores = (torch.randn(n, generator=g) * 0.5 - 4.6).to(device).requires_grad_(True)
    labels = labels.to(device)
    seed = torch.ones((), device=device)  # the backward's incoming gradient, made outside
    if loss == "ap_loss":
        return scores, lambda: aploss_cuda.ap_loss(scores, labels).backward(seed)
    if loss == "rank_sort_loss":
        targets = torch.where(labels == 1, torch.rand(n, generator=g).to(device), labels.float())
        return scores, lambda: aploss_cuda.rank_sort_loss(scores, targets).backward(seed)
    regression = torch.rand(num_pos, generator=g).to(device)
    return scores, lambda: aploss_cuda.alrp_loss(scores, labels, regression)[0].backward(seed)


def cost(target, call):
    if target.gpu:
        return gpu_cost(call)
    with target.running() as device:
        return emulated_cost(device, call)


def assert_within(measured, budget, label):
    assert measured.launches <= budget.launches, f"{label}: {measured}"
    assert measured.host_syncs <= budget.host_syncs, f"{label}: {measured}"
    if budget.allocations is not None:
        assert measured.allocations <= budget.allocations, f"{label}: {measured}"


H100_TARGETS = [t for t in EMULATED if t.profile == "h100"] + CUDA


@pytest.mark.parametrize("target", H100_TARGETS, ids=str)
@pytest.mark.parametrize("loss", list(BUDGETS))
@pytest.mark.parametrize("num_pos", [100, 4000])
def test_one_call_within_budget(target, loss, num_pos):
    n = 100_000
    scores, call = problem(loss, n, num_pos, target.tensor_device)
    measured = cost(target, call)
    assert_within(measured, BUDGETS[loss], f"{loss}, P = {num_pos}")


@pytest.mark.parametrize("target", [t for t in H100_TARGETS if not t.gpu], ids=str)
def test_no_n_sized_allocation_but_the_gradient_and_the_classes(target):
    # What grows with N, at a fixed P: only the gradient and the entries' packed classes
    # (the workspace and the O(P) outputs are sized by P, or the capacity of the one-block
    # sort). The allocator of a GPU counts allocations but does not list their sizes.
    sizes = {}
    for n in (1 << 17, 1 << 18):
        scores, call = problem("ap_loss", n, 1000, target.tensor_device)
        sizes[n] = sorted(cost(target, call).allocation_bytes)
    small, large = sizes[1 << 17], sizes[1 << 18]
    grown = sorted(set(large) - set(small))
    assert grown == sorted([(1 << 18) // 32 * 8, (1 << 18) * 4]), (small, large)
    assert len(small) == len(large)


@pytest.mark.parametrize("target", [t for t in EMULATED if t.profile == "small"][:1], ids=str)
@pytest.mark.parametrize("loss", list(BUDGETS))
def test_more_positives_than_the_one_block_sort(target, loss):
    # The small GPU's sort holds 512 positives: 2,000 take ATen's sort and one more gather.
    scores, call = problem(loss, 20_000, 2000, target.tensor_device)
    measured = cost(target, call)
    limit = LARGE_P_LAUNCHES
    syncs = BUDGETS[loss].host_syncs + (1 if loss == "alrp_loss" else 0)  # its values' check
    assert measured.launches <= limit and measured.host_syncs <= syncs, f"{loss}: {measured}"


# Grouped rankings (ids broadcast per image and per class) run the stage path: the driver's
# ATen stage ops (most of the launches), the gather, and the grouped index built on the
# device for each pass: at most 16 launches of our kernels for a forward and backward. Host
# syncs: no more than the ungrouped stage path's (method 'pairwise'), one more for full-size
# ids; nothing N-sized is allocated but the gradient.
GROUPED_OWN_LAUNCHES = 16
GROUPED_LAUNCHES = 136
GROUPED_SHAPE = (8, 2500, 5)  # (images, anchors, classes): N = 100,000


def grouped_problem(grouping, shape, device, num_pos=1000):
    B, A, C = shape
    n = B * A * C
    g = torch.Generator().manual_seed(n)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[torch.randperm(n, generator=g)[:num_pos]] = 1
    labels = labels.view(shape).to(device)
    scores = (torch.randn(shape, generator=g) * 0.5 - 4.6).to(device).requires_grad_(True)
    ids = torch.arange(B)[:, None, None] if grouping != "per-class" else torch.arange(C)
    if grouping == "full-size":
        ids = ids.expand(shape).contiguous()
    ids = ids.to(device)
    seed = torch.ones((), device=device)
    return lambda: aploss_cuda.ap_loss(scores, labels, group_ids=ids).backward(seed)


def ungrouped_stage_syncs(target, shape):
    labels = (torch.rand(shape, generator=torch.Generator().manual_seed(1)) < 0.01).long()
    scores = torch.randn(shape).requires_grad_(True)
    seed = torch.ones(())
    return cost(target, lambda: aploss_cuda.ap_loss(
        scores, labels, method="pairwise").backward(seed)).host_syncs


@pytest.mark.parametrize("target", [t for t in EMULATED if t.profile == "h100"], ids=str)
@pytest.mark.parametrize("grouping", ["per-image", "per-class", "full-size"])
def test_grouped_call_within_budget(target, grouping):
    measured = cost(target, grouped_problem(grouping, GROUPED_SHAPE, target.tensor_device))
    # Full-size ids: one read of their bounds more.
    syncs = ungrouped_stage_syncs(target, (4, 100, 5)) + (grouping == "full-size")
    assert sum(measured.kernels.values()) <= GROUPED_OWN_LAUNCHES, f"{grouping}: {measured}"
    assert measured.launches <= GROUPED_LAUNCHES, f"{grouping}: {measured}"
    assert measured.host_syncs <= syncs, f"{grouping}: {measured}, ungrouped stage path {syncs}"
    # No stage takes a number of launches that grows with P (a scan by doubling would add
    # four per doubling of P).
    more = cost(target, grouped_problem(grouping, GROUPED_SHAPE, target.tensor_device,
                                        num_pos=8000))
    assert more.launches == measured.launches, f"P = 8,000: {more}; P = 1,000: {measured}"


# Grouped Rank & Sort: AP-loss's stage path plus three window sums, two of them under a key
# (the targets). Each keyed one walks a tree over the positives (key_window_sums.h), one
# cumsum and one kernel per level: P = 8,000 has three levels more than P = 1,000.
GROUPED_RANK_SORT_LAUNCHES = 228
KEYED_SUMS_LAUNCHES_PER_LEVEL = 3  # a cumsum (as CUB: 2) and tree_level_kernel


def grouped_rank_sort_problem(num_pos, device):
    B, A, C = GROUPED_SHAPE
    g = torch.Generator().manual_seed(num_pos)
    targets = torch.zeros(B * A * C)
    targets[torch.randperm(B * A * C, generator=g)[:num_pos]] = torch.rand(num_pos, generator=g)
    targets = targets.clamp(min=0.05).where(targets > 0, 0.0).view(GROUPED_SHAPE).to(device)
    scores = (torch.randn(GROUPED_SHAPE, generator=g) * 0.5 - 4.6).to(device).requires_grad_(True)
    ids = torch.arange(B, device=device)[:, None, None]
    seed = torch.ones((), device=device)
    return lambda: aploss_cuda.rank_sort_loss(scores, targets, group_ids=ids).backward(seed)


@pytest.mark.parametrize("target", [t for t in EMULATED if t.profile == "h100"], ids=str)
def test_grouped_rank_sort_launches_per_level(target):
    measured = cost(target, grouped_rank_sort_problem(1000, target.tensor_device))
    assert measured.launches <= GROUPED_RANK_SORT_LAUNCHES, str(measured)
    more = cost(target, grouped_rank_sort_problem(8000, target.tensor_device))
    assert more.launches - measured.launches <= 2 * 3 * KEYED_SUMS_LAUNCHES_PER_LEVEL, (
        f"P = 8,000: {more}; P = 1,000: {measured}")
    assert more.host_syncs == measured.host_syncs


@pytest.mark.parametrize("target", [t for t in EMULATED if t.profile == "h100"], ids=str)
@pytest.mark.parametrize("grouping", ["per-image", "per-class"])
def test_grouped_call_allocates_nothing_n_sized_but_the_gradient(target, grouping):
    # What grows with N at a fixed P: only the gradient (float32).
    sizes = {}
    for anchors in (2500, 5000):
        call = grouped_problem(grouping, (8, anchors, 5), target.tensor_device)
        sizes[anchors] = sorted(cost(target, call).allocation_bytes)
    small, large = sizes[2500], sizes[5000]
    # As multisets: one int32 code per entry would be as large as the float32 gradient.
    grown = collections.Counter(large) - collections.Counter(small)
    assert grown == collections.Counter([8 * 5000 * 5 * 4]), (small, large)
    assert len(small) == len(large)
