"""Named ways of giving group_ids, for scores shaped (images, anchors, classes): the
groupings axis of the test tables. Each reaches a different path: ids broadcast over the
scores (no N-sized codes on the CPU), full-size ids, ids small enough to be their own
codes or so large they are numbered through a sort, non-contiguous ids, one group,
groups without positives, thousands of groups of a few entries."""

import torch

# Ids at or above max(2**16, 2 * group_ids.numel()) are numbered through a sort; smaller
# ones are their own codes.
BIG = 1_000_003
HUGE = 2**40


def _full(shape, num_groups, seed, scale=1, offset=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_groups, shape, generator=g) * scale + offset


_GROUPINGS = {
    "per-image": lambda B, A, C: torch.arange(B)[:, None, None],
    "per-class": lambda B, A, C: torch.arange(C),
    "per-image-and-class": lambda B, A, C: torch.arange(B * C).reshape(B, 1, C),
    "per-class-big-ids": lambda B, A, C: torch.arange(C) * BIG,
    "full-size": lambda B, A, C: _full((B, A, C), 7, seed=1),
    "full-size-big-ids": lambda B, A, C: _full((B, A, C), 11, seed=8, scale=BIG),
    "full-size-huge-ids": lambda B, A, C: _full((B, A, C), 9, seed=3, scale=HUGE, offset=11),
    "full-size-64-groups": lambda B, A, C: _full((B, A, C), 64, seed=7),
    "full-size-64-huge-ids": lambda B, A, C: _full((B, A, C), 64, seed=9, scale=HUGE, offset=5),
    # int32 ids are their own codes: the operator must copy them, not return its input
    "per-image-int32": lambda B, A, C: torch.arange(B, dtype=torch.int32)[:, None, None],
    # non-contiguous ids numbered through a sort: the fake must predict the codes' strides
    "transposed-big-ids": lambda B, A, C: (_full((C, A), 5, seed=13) * BIG).t()[None],
    "one-group": lambda B, A, C: torch.tensor(9),
    "without-positives": lambda B, A, C: torch.arange(B * A * C).reshape(B, A, C) % 1999,
    "tiny-groups": lambda B, A, C: torch.arange(B * A * C).reshape(B, A, C) // 3,
}

NAMES = tuple(_GROUPINGS)


def group_ids(name, shape):
    """The ids of grouping `name` for scores of `shape` (images, anchors, classes); None
    for the ungrouped call."""
    return None if name is None else _GROUPINGS[name](*shape)
