"""torch.library.opcheck of every operator the losses call, over one table of cases:
operator x loss x grouping, on every backend registered (cpu, cuda when present). opcheck
holds each operator against its fake (torch.compile's view of it), its schema and its
autograd registration."""

import dataclasses

import operators
import pytest
import torch
from groupings import group_ids
from helpers import opcheck
from losses import LOSSES, problem

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SHAPE = (4, 30, 5)  # (images, anchors, classes)


@dataclasses.dataclass(frozen=True)
class Case:
    role: str  # "forward", "backward" or "stages"
    loss: str
    grouping: str = None  # groupings.py's name; None: ungrouped
    dtype: torch.dtype = torch.float64
    method: str = "sorted"  # AP-loss's only
    labels: str = "random"  # "random", "no-positive" or "empty"

    def __str__(self):
        parts = [self.role, self.loss, self.grouping or "ungrouped", str(self.dtype)[6:]]
        parts += [self.method] if self.method != "sorted" else []
        parts += [self.labels] if self.labels != "random" else []
        return "-".join(parts)


# AP-loss over groupings that reach different code paths of the forward: ids broadcast,
# their own codes or numbered through a sort, full-size, int32, non-contiguous. The codes
# are the same for every loss: Rank & Sort and aLRP take one grouping.
AP_GROUPINGS = [None, "per-image", "per-class-big-ids", "full-size", "full-size-huge-ids",
                "per-image-int32", "transposed-big-ids"]
FAMILY = ("rank_sort", "alrp")

CASES = (
    [Case("forward", "ap", grouping, dtype) for grouping in AP_GROUPINGS
     for dtype in (torch.float32, torch.float64)]
    + [Case("forward", "ap", None, dtype, "pairwise") for dtype in (torch.float32, torch.float64)]
    + [Case("forward", loss, grouping) for loss in FAMILY for grouping in (None, "full-size")]
    + [Case("forward", "ap", None, labels="no-positive"),
       Case("forward", "ap", "per-class", labels="no-positive"),
       Case("forward", "ap", "per-class", labels="empty")]
    + [Case("forward", loss, "per-class", labels="no-positive") for loss in FAMILY]
    + [Case("backward", "ap", grouping, torch.float32)
       for grouping in (None, "per-image", "per-class-big-ids", "full-size-huge-ids")]
    + [Case("backward", "ap", None, torch.float32, "pairwise")]
    + [Case("backward", loss, grouping) for loss in FAMILY for grouping in (None, "full-size")]
    + [Case("stages", loss, grouping) for loss in LOSSES for grouping in (None, "full-size")]
)


def inputs(case, device):
    """(scores, second, extra, group_ids) of the case on `device`."""
    shape = (0, 5) if case.labels == "empty" else SHAPE
    p_pos = 0.0 if case.labels == "no-positive" else 0.1
    scores, second, extra = problem(case.loss, shape, seed=42, p_pos=p_pos, dtype=case.dtype)
    ids = group_ids(case.grouping, SHAPE)
    put = lambda t: None if t is None else t.to(device)  # noqa: E731
    return put(scores), put(second), {k: put(v) for k, v in extra.items()}, put(ids)


def forward_calls(case, scores, second, extra, ids):
    """The forward with every output, and as the losses call it (loss, extra)."""
    for requires_grad in (False, True):
        x = scores.clone().requires_grad_(requires_grad)
        args = operators.forward_args(case.loss, x, second, ids, 1.0, method=case.method, **extra)
        yield operators.forward_operator(case.loss), args
        yield operators.operator("loss"), args


def backward_calls(case, scores, second, extra, ids):
    outputs = operators.forward(case.loss, scores, second, ids, 1.0, method=case.method, **extra)
    grad_output = torch.tensor(2.0, device=scores.device)
    args = operators.backward_args(case.loss, outputs, grad_output, scores, second,
                                   grouped=ids is not None, method=case.method)
    yield operators.backward_operator(), args


def stage_calls(case, scores, second, extra, ids):
    """The stages aploss_cuda.distributed composes, on ids that are their own codes."""
    codes = None if ids is None else ids.to(torch.int32)
    num_groups = 1 if ids is None else int(ids.max()) + 1
    labels = second
    if case.loss == "rank_sort":
        yield operators.operator("loss_labels"), operators.labels_args("rank_sort", second)
        labels = operators.rank_sort_labels(second)
    # aLRP's first stages are AP-loss's, on the same labels
    shared = case.loss != "alrp"
    gathered = operators.gather(scores, labels, codes)
    ranked = operators.rank_positives(gathered, num_groups, 1.0)
    positives, offsets, group = ranked[:3]
    if shared:
        yield operators.operator("gather"), (scores, labels, codes)
        yield operators.operator("rank_positives"), (gathered, num_groups, 1.0)
        args = operators.pass1_args(scores, labels, codes, positives, offsets, group, 1.0)
        yield operators.operator("pass1"), args
    fp = operators.pass1(scores, labels, codes, positives, offsets, group, 1.0)
    values = operators.per_positive(case.loss, ranked, second, extra.get("regression_losses"))
    if case.loss != "ap":  # the values the stage reads, from the loss's inputs
        yield operators.operator("positive_values"), operators.positive_values_args(
            case.loss, scores, second, extra.get("regression_losses"), ranked[3].sort().values)
    yield operators.loss_stage_operator(case.loss), operators.loss_stage_args(
        case.loss, ranked, fp, 1.0, per_positive=values)


CALLS = {"forward": forward_calls, "backward": backward_calls, "stages": stage_calls}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_opcheck(case, device):
    for op, args in CALLS[case.role](case, *inputs(case, device)):
        opcheck(op, args)
