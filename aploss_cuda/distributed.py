"""One exact ranking across the ranks of a ``torch.distributed`` process group.

``ap_loss``, ``rank_sort_loss`` and ``alrp_loss`` with ``process_group=pg`` rank the union
of every rank's entries: the stages of ``aploss::loss_forward`` (csrc/pipeline.h) as
operators, with the loss's name as their argument, and communication between them
(``_AcrossRanks``, the one code path of every loss). The two streaming passes stay local;
only P-sized data crosses the network:

1. all_gather of 3 int64 per rank: the rank's positive count, an error flag (a rank
   whose input is invalid tells the others, so every rank raises instead of hanging) and
   whether the loss has a value per positive;
2. all_gather of every rank's positives, in the rank's memory (row-major) order, as rows
   of one float64 buffer padded to the largest count: the score and the group id, plus
   the loss's value where it has one (Rank & Sort's target, aLRP's regression loss). 16
   bytes per positive (AP-loss) or 24 (Rank & Sort, aLRP) of the largest rank, times the
   world size;
3. all_reduce (sum) of fp(i), the P false-positive sums of pass 1, plus the error flag
   of pass 1 (a non-finite negative): 8 (P + 1) bytes.

The exchange index of a positive (its place in the rank-major concatenation of the
exchange) is its position in the global ranking: ties among positives sort by it, as the
single-process call sorts them by their flat position in the concatenated inputs.

Every rank then runs the same positive stage on the same data, so the loss (and Rank &
Sort's parts, aLRP's cls_loss) is bitwise identical on every rank, and each rank's
backward (pass 2 over its own entries, with its own positives' gradients from the stage)
gives its slice of the single-process gradient over the concatenated inputs. aLRP's
loc_loss is the all_reduce (``sum_across_ranks``) of each rank's sum over its own
positives, so its gradient to each rank's regression losses is that rank's slice.

DistributedDataParallel averages parameter gradients over ranks. Each rank's scores get
their slice of the global gradient, so the SUM over ranks of the parameter gradients is
the single-process gradient on the global batch, and DDP's average is that divided by the
world size. To get exactly the single-process gradient, multiply the loss by the world
size before ``backward()``: ``(loss * dist.get_world_size(pg)).backward()``.
"""

from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

from ._ops import forward_outputs_trusted


class RemoteRankError(RuntimeError):
    """Raised on the ranks whose own input was fine when another rank's was not."""


def _as_raised_by(name, error):
    """A stage operator's error as the loss raises it: under the loss's name."""
    message = str(error)
    if message.startswith("aploss::") and ": " in message:
        return type(error)(f"{name}: " + message.split(": ", 1)[1])
    return error


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
    given_labels: torch.Tensor  # the loss's labels input (Rank & Sort: the targets)
    labels: torch.Tensor  # what the passes read
    values: Optional[torch.Tensor]  # the loss's values input (aLRP: regression losses)
    positive_scores: torch.Tensor  # float64
    positive_ids: torch.Tensor  # int64 group ids
    positions: torch.Tensor  # int64 flat positions in the entries
    positive_values: torch.Tensor  # float64, one per positive, or empty: the loss has none


def _gather_local(name, inputs, group_ids):
    """Validation and the gather: everything a rank does before it first talks."""
    scores, labels, values = inputs()
    converted = torch.ops.aploss.loss_labels(name, labels)  # flat, or empty: labels itself
    pass_labels = converted.view(labels.shape) if converted.numel() == labels.numel() else labels
    codes, ids = _local_group_codes(scores, group_ids, name)
    gathered = torch.ops.aploss.gather(scores, pass_labels, codes)
    gathered = gathered[:, gathered[2].argsort()]  # memory order (CUDA gathers in none)
    positions = gathered[2].to(torch.int64)
    positive_values = torch.ops.aploss.positive_values(name, scores, labels, values, positions)
    return _Local(scores, labels, pass_labels, values, gathered[0], ids[gathered[1].to(torch.int64)],
                  positions, positive_values)


class _Exchanged(NamedTuple):
    """Every rank's positives, rank-major (the exchange order), and where this rank's lie."""

    scores: torch.Tensor
    ids: torch.Tensor
    values: Optional[torch.Tensor]  # None: the loss has none
    start: int  # this rank's positives are [start, start + count) of the exchange
    count: int


def _exchange_positives(name, local, error, device, group):
    """Steps 1 and 2."""
    count = 0 if local is None else local.positive_scores.numel()
    has_values = local is not None and count > 0 and local.positive_values.numel() == count
    meta = torch.tensor([count, 1 if error is not None else 0, int(has_values)],
                        dtype=torch.int64, device=device)
    metas = _all_gather_fixed(meta, group)
    counts = [int(m[0]) for m in metas]
    failed = [rank for rank, m in enumerate(metas) if int(m[1]) != 0]
    if error is not None:
        raise error
    if failed:
        raise RemoteRankError(
            f"{name}: rank(s) {failed} of the process group rejected their input; see their error"
        )
    values = any(int(m[2]) != 0 for m in metas)  # every rank with positives says the same
    start = sum(counts[: dist.get_rank(group)])
    width = max(counts)
    if width == 0:
        empty = torch.empty(0, dtype=torch.float64, device=device)
        return _Exchanged(empty, empty.to(torch.int64), None, 0, 0)
    # One float64 buffer: the scores, the int64 ids bit-cast (exact), the loss's values.
    packed = torch.zeros((3 if values else 2, width), dtype=torch.float64, device=device)
    packed[0, :count] = local.positive_scores
    packed[1, :count] = local.positive_ids.view(torch.float64)
    if values:
        packed[2, :count] = local.positive_values
    rows = _all_gather_fixed(packed, group)
    return _Exchanged(
        torch.cat([row[0, :c] for row, c in zip(rows, counts)]),
        torch.cat([row[1, :c].contiguous().view(torch.int64) for row, c in zip(rows, counts)]),
        torch.cat([row[2, :c] for row, c in zip(rows, counts)]) if values else None,
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


def _local_positive_grads(positive_grads, local, exchanged):
    """This rank's rows of the stage's (P, 2) [exchange index, gradient], with the
    exchange index mapped back to the flat local position pass 2 writes to."""
    index = positive_grads[:, 0].to(torch.int64) - exchanged.start
    mine = (index >= 0) & (index < exchanged.count)
    own = positive_grads[mine].clone()
    own[:, 0] = local.positions.index_select(0, index[mine]).to(torch.float64)
    return own


def _no_positive_outputs(name, local):
    """(loss, extra) of a ranking without positives: the forward on no entries."""
    values = None if local.values is None else local.values[:0]
    out = torch.ops.aploss.loss_forward(
        name, local.scores.reshape(-1)[:0], local.given_labels.reshape(-1)[:0], values, None, 1.0,
        False, "sorted",
    )
    return out[0].detach(), out[1]


class _AcrossRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, name, group, options, scores, inputs):
        # (a non-tensor `scores` is reported by the validation in inputs())
        device = scores.device if isinstance(scores, torch.Tensor) else torch.device("cpu")
        group_ids = options["group_ids"]
        local, error = None, None
        try:
            local = _gather_local(name, inputs, group_ids)
        except (TypeError, ValueError, RuntimeError) as e:  # raised after telling the others
            error = _as_raised_by(name, e)
        exchanged = _exchange_positives(name, local, error, device, group)
        ctx.delta = delta = float(options["delta"])  # validated by inputs()
        if exchanged.scores.numel() == 0:
            ctx.has_positives = False
            ctx.save_for_backward(scores)
            loss, extra = _no_positive_outputs(name, local)
            ctx.mark_non_differentiable(extra)
            return loss, extra

        codes, unique, num_groups = _global_codes(group_ids, exchanged.ids, device)
        positive_codes = torch.searchsorted(unique, exchanged.ids).to(torch.float64)
        # Positions: the exchange index, so ties sort alike on every rank, and as the
        # single-process call sorts them (by flat position in the concatenated inputs).
        order = torch.arange(exchanged.scores.numel(), dtype=torch.float64, device=device)
        positives, offsets, positive_group, positions, memory_rank = (
            torch.ops.aploss.rank_positives(
                torch.stack([exchanged.scores, positive_codes, order]), num_groups, delta
            )
        )
        # Pass 1 over this rank's entries; a non-finite negative is reported, not raised,
        # until every rank knows (the flag rides in the last element of the all_reduce).
        try:
            fp = torch.ops.aploss.pass1(
                local.scores, local.labels, codes, positives, offsets, positive_group, delta,
                "sorted",
            )
            flag, error = 0.0, None
        except ValueError as e:
            fp = torch.zeros(positives.shape[1], dtype=torch.float64, device=device)
            flag, error = 1.0, _as_raised_by(name, e)
        reduced = torch.cat([fp, fp.new_full((1,), flag)])
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
        if error is not None:
            raise error
        if float(reduced[-1]) != 0.0:
            raise RemoteRankError(
                f"{name}: another rank of the process group found a non-finite score"
            )
        # The exchange index is the global memory rank.
        loss, extra, state, positive_grads = torch.ops.aploss.positive_stage(
            name, positives, offsets, positive_group, positions, memory_rank, reduced[:-1],
            exchanged.values, delta, bool(options["interpolate"]), local.scores.dtype,
            options["method"],
        )
        if options["per_positive_extra"]:  # this rank's positives' values
            extra = extra[exchanged.start : exchanged.start + exchanged.count]
        ctx.has_positives = True
        ctx.save_for_backward(
            local.scores, local.labels, codes, state, offsets,
            _local_positive_grads(positive_grads, local, exchanged),
        )
        ctx.mark_non_differentiable(extra)
        return loss, extra

    @staticmethod
    def backward(ctx, grad_loss, grad_extra):
        if not ctx.has_positives:
            (scores,) = ctx.saved_tensors
            return None, None, None, torch.zeros_like(scores), None
        scores, labels, codes, state, offsets, positive_grads = ctx.saved_tensors
        with forward_outputs_trusted():
            grad = torch.ops.aploss.loss_backward(
                grad_loss, scores, labels, labels.new_empty((0,), dtype=torch.int64), codes,
                state, offsets, positive_grads, ctx.delta, "sorted",
            )
        return None, None, None, grad, None


def across_ranks(name, process_group, scores, inputs, *, group_ids, delta, interpolate, method,
                 per_positive_extra):
    """(loss, extra) of the loss named ``name`` over every rank's entries (the module
    docstring); called by _pipeline.forward, with its arguments."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{name}: process_group given but torch.distributed is not initialized")
    if method == "pairwise":
        raise ValueError(f"{name}: process_group works with method 'sorted' or 'auto'")
    options = dict(group_ids=group_ids, delta=delta, interpolate=interpolate, method="sorted",
                   per_positive_extra=per_positive_extra)
    return _AcrossRanks.apply(name, process_group, options, scores, inputs)


class _SumAcrossRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, group):
        total = value.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx, grad):
        return grad, None  # each rank's term enters the one total once


def sum_across_ranks(value, process_group):
    """The sum of every rank's ``value`` (the same on every rank), whose gradient to each
    rank's ``value`` is the incoming gradient: a loss summed over the ranks' terms."""
    return _SumAcrossRanks.apply(value, process_group)
