"""One exact ranking across the ranks of a ``torch.distributed`` process group.

``ap_loss``, ``rank_sort_loss`` and ``alrp_loss`` with ``process_group=pg`` rank the union
of every rank's entries, through one code path (``_AcrossRanks``); only the positive stage
and the per-positive value each loss needs are the loss's own (``_APLoss``,
``_RankSortLoss``, ``_ALRPLoss``). The two streaming passes stay local; only P-sized data
crosses the network:

1. all_gather of 2 int64 per rank: the rank's positive count and an error flag (a rank
   whose input is invalid tells the others, so every rank raises instead of hanging);
2. all_gather of every rank's positives, in the rank's memory (row-major) order, as rows
   of one float64 buffer padded to the largest count: the score and the group id, plus,
   for Rank & Sort, the target and, for aLRP, the regression loss. 16 bytes per positive
   (AP-loss) or 24 bytes per positive (Rank & Sort, aLRP) of the largest rank, times the
   world size;
3. all_reduce (sum) of fp(i), the P false-positive sums of pass 1, plus the error flag
   of pass 1 (a non-finite negative): 8 (P + 1) bytes.

The exchange index of a positive (its place in the rank-major concatenation of the
exchange) is its position in the global ranking: ties among positives sort by it, as the
single-process call sorts them by their flat position in the concatenated inputs.

Every rank then runs the same positive stage on the same data, so the loss (and Rank &
Sort's parts, aLRP's cls_loss and loc_loss) is bitwise identical on every rank, and each
rank's backward (pass 2 over its own entries, with its own positives' gradients from the
stage) gives its slice of the single-process gradient over the concatenated inputs; for
aLRP, also the gradient of loc_loss to its own regression losses.

DistributedDataParallel averages parameter gradients over ranks. Each rank's scores get
their slice of the global gradient, so the SUM over ranks of the parameter gradients is
the single-process gradient on the global batch, and DDP's average is that divided by the
world size. To get exactly the single-process gradient, multiply the loss by the world
size before ``backward()``: ``(loss * dist.get_world_size(pg)).backward()``.
"""

from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

from . import _contract
from ._ops import forward_outputs_trusted


class RemoteRankError(RuntimeError):
    """Raised on the ranks whose own input was fine when another rank's was not."""


def _as_raised_by(name, error):
    """A stage operator's error as the loss raises it: under the loss's name."""
    message = str(error)
    if message.startswith("aploss::") and ": " in message:
        return type(error)(f"{name}: " + message.split(": ", 1)[1])
    return error


# ---------------------------------------------------------------------------------------
# What each loss adds: validation, the labels the passes read, one float64 value per
# positive (or none) and the positive stage.


class _Stage(NamedTuple):
    outputs: tuple  # the loss's return values; outputs[0] carries the gradient to scores
    state: torch.Tensor  # what pass 2 reads
    positive_grads: torch.Tensor  # (P, 2) [exchange index, gradient]
    value_weights: Optional[torch.Tensor]  # (P,) exchange order: d outputs[-1] / d value


class _APLoss:
    name = "ap_loss"
    values = False  # no value per positive besides (score, group id)
    differentiable = 1  # outputs[:differentiable] are differentiable

    def __init__(self, delta, interpolate, method):
        self.delta, self.interpolate, self.method = delta, interpolate, method

    def local_inputs(self, scores, labels, extra, group_ids):
        """Validates; returns (scores, labels) as the passes read them."""
        _contract.validate(scores, labels, self.delta, self.method)
        _contract.validate_group_ids(group_ids, scores, self.method)
        if self.method == "pairwise":
            raise ValueError("ap_loss: process_group works with method 'sorted' or 'auto'")
        self.delta = float(self.delta)
        return scores, labels

    def local_values(self, labels, extra, local_positions):
        return None

    def stage(self, ranking, false_positives, values, loss_dtype):
        loss, state, positive_grads = torch.ops.aploss.positive_stage(
            ranking.positives, ranking.offsets, ranking.positive_group, ranking.positions,
            false_positives, self.delta, self.interpolate, loss_dtype, "sorted",
        )
        return _Stage((loss,), state, positive_grads, None)

    def no_positive(self, scores, extra):
        return (scores.new_zeros(()),)


class _RankSortLoss:
    name = "rank_sort_loss"
    values = True  # the target of each positive
    differentiable = 1  # the loss; its two parts are detached

    def __init__(self, delta):
        self.delta = delta

    def local_inputs(self, scores, targets, extra, group_ids):
        _contract.validate_rank_sort(scores, targets, self.delta)
        _contract.validate_group_ids(group_ids, scores, "sorted", self.name)
        self.delta = float(self.delta)
        # Contiguous, as the single-process call: the flat order is the row-major order.
        self.targets = targets.detach().contiguous()
        return scores.contiguous(), torch.ops.aploss.rank_sort_labels(self.targets)

    def local_values(self, labels, extra, local_positions):
        return self.targets.view(-1).index_select(0, local_positions).to(torch.float64)

    def stage(self, ranking, false_positives, values, loss_dtype):
        loss, parts, state, positive_grads = torch.ops.aploss.rank_sort_stage(
            ranking.positives, ranking.offsets, ranking.positive_group, ranking.positions,
            false_positives, values.index_select(0, ranking.positions), self.delta, loss_dtype,
        )
        return _Stage((loss, parts[0].clone(), parts[1].clone()), state, positive_grads, None)

    def no_positive(self, scores, extra):
        return tuple(scores.new_zeros(()) for _ in range(3))


class _ALRPLoss:
    name = "alrp_loss"
    values = True  # the regression loss of each positive
    differentiable = 2  # cls_loss (to scores) and loc_loss (to regression_losses)

    def __init__(self, delta):
        self.delta = delta

    def local_inputs(self, scores, labels, regression_losses, group_ids):
        _contract.validate_alrp(scores, labels, regression_losses, self.delta)
        _contract.validate_group_ids(group_ids, scores, "sorted", self.name)
        self.delta = float(self.delta)
        self.loc_dtype = regression_losses.dtype
        return scores.contiguous(), labels.contiguous()

    def local_values(self, labels, regression_losses, local_positions):
        num_pos = local_positions.numel()
        if regression_losses.numel() != num_pos:
            raise ValueError(
                "alrp_loss: regression_losses must be 1-D with one value per positive "
                f"({num_pos} positives), got shape {list(regression_losses.shape)}"
            )
        values = regression_losses.detach().to(torch.float64)
        if num_pos > 0:
            low, high = float(values.min()), float(values.max())  # NaN if any value is
            if not (low >= 0.0 and high < float("inf")):
                raise ValueError(
                    "alrp_loss: regression_losses must be finite and >= 0; found values in "
                    f"[{low}, {high}]"
                )
        return values

    def stage(self, ranking, false_positives, values, loss_dtype):
        cls_loss, loc_weights, state, positive_grads = torch.ops.aploss.alrp_stage(
            ranking.positives, ranking.offsets, ranking.positive_group, ranking.positions,
            ranking.memory_rank, false_positives, values.index_select(0, ranking.memory_rank),
            self.delta, loss_dtype,
        )
        # loc_weights are in exchange order, as the values: the single-process sum.
        loc_loss = (values * loc_weights).sum().to(self.loc_dtype)
        return _Stage((cls_loss, loc_loss), state, positive_grads, loc_weights)

    def no_positive(self, scores, regression_losses):
        return scores.new_zeros(()), regression_losses.new_zeros(())


LOSSES = {"ap_loss": _APLoss, "rank_sort_loss": _RankSortLoss, "alrp_loss": _ALRPLoss}


# ---------------------------------------------------------------------------------------
# The one path.


def _all_gather_fixed(tensor, group):
    world = dist.get_world_size(group)
    out = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(out, tensor, group=group)
    return out


def _local_group_codes(scores, group_ids, name):
    """Local dense codes of group_ids (small, broadcastable) and the ids they stand for;
    none for a single ranking (its positives all carry id 0)."""
    if group_ids is None:
        return None, torch.zeros(1, dtype=torch.int64, device=scores.device)
    if group_ids.numel() > 0 and int(group_ids.min()) < 0:
        raise ValueError(f"{name}: group_ids must be >= 0, found {int(group_ids.min())}")
    unique, inverse = torch.unique(group_ids, sorted=True, return_inverse=True)
    return inverse.to(torch.int32), unique.to(torch.int64)


class _Local(NamedTuple):
    """What a rank knows before it first talks; its positives in memory order."""

    scores: torch.Tensor
    labels: torch.Tensor
    positive_scores: torch.Tensor  # float64
    positive_ids: torch.Tensor  # int64 group ids
    positions: torch.Tensor  # int64 flat positions in the entries
    values: Optional[torch.Tensor]  # float64, one per positive, or None


def _gather_local(loss, scores, labels, extra, group_ids):
    """Validation and the gather: everything a rank does before it first talks."""
    scores, labels = loss.local_inputs(scores, labels, extra, group_ids)
    codes, ids = _local_group_codes(scores, group_ids, loss.name)
    gathered = torch.ops.aploss.gather(scores, labels, codes)
    gathered = gathered[:, gathered[2].argsort()]  # memory order (CUDA gathers in none)
    positions = gathered[2].to(torch.int64)
    values = loss.local_values(labels, extra, positions)
    return _Local(
        scores, labels, gathered[0], ids[gathered[1].to(torch.int64)], positions, values
    )


class _Exchanged(NamedTuple):
    """Every rank's positives, rank-major (the exchange order), and where this rank's lie."""

    scores: torch.Tensor
    ids: torch.Tensor
    values: Optional[torch.Tensor]
    start: int  # this rank's positives are [start, start + count) of the exchange
    count: int


def _exchange_positives(loss, local, error, device, group):
    """Steps 1 and 2."""
    count = 0 if local is None else local.positive_scores.numel()
    meta = torch.tensor([count, 1 if error is not None else 0], dtype=torch.int64, device=device)
    metas = _all_gather_fixed(meta, group)
    counts = [int(m[0]) for m in metas]
    failed = [rank for rank, m in enumerate(metas) if int(m[1]) != 0]
    if error is not None:
        raise error
    if failed:
        raise RemoteRankError(
            f"{loss.name}: rank(s) {failed} of the process group rejected their input; "
            "see their error"
        )
    start = sum(counts[: dist.get_rank(group)])
    width = max(counts)
    if width == 0:
        empty = torch.empty(0, dtype=torch.float64, device=device)
        return _Exchanged(empty, empty.to(torch.int64), empty if loss.values else None, 0, 0)
    # One float64 buffer: the scores, the int64 ids bit-cast (exact), the loss's values.
    packed = torch.zeros((3 if loss.values else 2, width), dtype=torch.float64, device=device)
    packed[0, :count] = local.positive_scores
    packed[1, :count] = local.positive_ids.view(torch.float64)
    if loss.values:
        packed[2, :count] = local.values
    rows = _all_gather_fixed(packed, group)
    return _Exchanged(
        torch.cat([row[0, :c] for row, c in zip(rows, counts)]),
        torch.cat([row[1, :c].contiguous().view(torch.int64) for row, c in zip(rows, counts)]),
        torch.cat([row[2, :c] for row, c in zip(rows, counts)]) if loss.values else None,
        start,
        count,
    )


def _global_codes(group_ids, positive_ids, device):
    """Dense codes over the groups that have a positive on some rank (identical on every
    rank); entries of other groups get the code U (no segment: zero gradient). A single
    ranking has no codes and one group."""
    unique = torch.unique(positive_ids, sorted=True)
    if group_ids is None:
        return None, unique, 1
    ids = group_ids.to(torch.int64)
    at = torch.searchsorted(unique, ids).clamp_(max=unique.numel() - 1)
    found = unique[at] == ids
    codes = torch.where(found, at, torch.full_like(at, unique.numel()))
    return codes.to(torch.int32), unique, unique.numel()


class _Ranking(NamedTuple):
    positives: torch.Tensor
    offsets: torch.Tensor
    positive_group: torch.Tensor
    positions: torch.Tensor  # exchange index of each sorted positive
    memory_rank: torch.Tensor  # the same (the exchange index is the global memory rank)


def _local_positive_grads(positive_grads, local, exchanged):
    """This rank's rows of the stage's (P, 2) [exchange index, gradient], with the
    exchange index mapped back to the flat local position pass 2 writes to."""
    index = positive_grads[:, 0].to(torch.int64) - exchanged.start
    mine = (index >= 0) & (index < exchanged.count)
    own = positive_grads[mine].clone()
    own[:, 0] = local.positions.index_select(0, index[mine]).to(torch.float64)
    return own


class _AcrossRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss, group, scores, labels, extra, group_ids):
        # (a non-tensor `scores` is reported by the validation below)
        device = scores.device if isinstance(scores, torch.Tensor) else torch.device("cpu")
        local, error = None, None
        try:
            local = _gather_local(loss, scores, labels, extra, group_ids)
        except (TypeError, ValueError, RuntimeError) as e:  # raised after telling the others
            error = _as_raised_by(loss.name, e)
        exchanged = _exchange_positives(loss, local, error, device, group)
        ctx.loss = loss
        if exchanged.scores.numel() == 0:
            ctx.has_positives = False
            ctx.save_for_backward(scores, extra)
            outputs = loss.no_positive(scores, extra)
            ctx.mark_non_differentiable(*outputs[loss.differentiable:])
            return outputs

        codes, unique, num_groups = _global_codes(group_ids, exchanged.ids, device)
        positive_codes = torch.searchsorted(unique, exchanged.ids).to(torch.float64)
        # Positions: the exchange index, so ties sort alike on every rank, and as the
        # single-process call sorts them (by flat position in the concatenated inputs).
        order = torch.arange(exchanged.scores.numel(), dtype=torch.float64, device=device)
        ranking = _Ranking(
            *torch.ops.aploss.rank_positives(
                torch.stack([exchanged.scores, positive_codes, order]), num_groups, loss.delta
            )
        )
        # Pass 1 over this rank's entries; a non-finite negative is reported, not raised,
        # until every rank knows (the flag rides in the last element of the all_reduce).
        try:
            fp = torch.ops.aploss.pass1(
                local.scores, local.labels, codes, ranking.positives, ranking.offsets,
                ranking.positive_group, loss.delta, "sorted",
            )
            flag = 0.0
            error = None
        except ValueError as e:
            fp = torch.zeros(ranking.positives.shape[1], dtype=torch.float64, device=device)
            flag, error = 1.0, _as_raised_by(loss.name, e)
        reduced = torch.cat([fp, fp.new_full((1,), flag)])
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
        if error is not None:
            raise error
        if float(reduced[-1]) != 0.0:
            raise RemoteRankError(
                f"{loss.name}: another rank of the process group found a non-finite score"
            )
        stage = loss.stage(ranking, reduced[:-1], exchanged.values, local.scores.dtype)
        positive_grads = _local_positive_grads(stage.positive_grads, local, exchanged)
        weights = None
        if stage.value_weights is not None:
            weights = stage.value_weights[exchanged.start : exchanged.start + exchanged.count]
        ctx.has_positives = True
        ctx.extra_dtype = extra.dtype if isinstance(extra, torch.Tensor) else None
        # codes, weights: None when the loss has none
        ctx.save_for_backward(
            local.scores, local.labels, codes, stage.state, ranking.offsets, positive_grads,
            weights,
        )
        ctx.mark_non_differentiable(*stage.outputs[loss.differentiable:])
        return stage.outputs

    @staticmethod
    def backward(ctx, grad_loss, *grad_others):
        nothing = (None, None)
        if not ctx.has_positives:
            scores, extra = ctx.saved_tensors
            grad_extra = torch.zeros_like(extra) if ctx.needs_input_grad[4] else None
            return (*nothing, torch.zeros_like(scores), None, grad_extra, None)
        scores, labels, codes, state, offsets, positive_grads, weights = ctx.saved_tensors
        with forward_outputs_trusted():
            grad = torch.ops.aploss.pass2(
                grad_loss, scores, labels, labels.new_empty((0,), dtype=torch.int64), codes,
                state, offsets, positive_grads, ctx.loss.delta, "sorted",
            )
        grad_extra = None
        if weights is not None and ctx.needs_input_grad[4]:
            # aLRP: loc_loss = sum_k l_k w_k, so d loc_loss / d l_k = w_k.
            grad_extra = (grad_others[-1].to(torch.float64) * weights).to(ctx.extra_dtype)
        return (*nothing, grad, None, grad_extra, None)


def across_ranks(name, process_group, scores, labels, extra=None, group_ids=None, **options):
    """The losses with ``process_group`` (see the module docstring); called by loss.py.

    name: "ap_loss" (options delta, interpolate, method; labels the labels),
    "rank_sort_loss" (delta; labels the targets) or "alrp_loss" (delta; extra the
    regression losses). Returns the tuple of the loss's outputs: (loss,), (loss, ranking,
    sorting) or (cls_loss, loc_loss).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{name}: process_group given but torch.distributed is not initialized")
    loss = LOSSES[name](**options)  # one per call: it keeps the call's validated options
    return _AcrossRanks.apply(loss, process_group, scores, labels, extra, group_ids)
