"""One exact ranking across the ranks of a ``torch.distributed`` process group.

``ap_loss(scores, labels, process_group=pg)`` ranks the union of every rank's entries.
The two streaming passes stay local; only P-sized data crosses the network:

1. all_gather of 2 int64 per rank: the rank's positive count and an error flag (a rank
   whose input is invalid tells the others, so every rank raises instead of hanging);
2. all_gather of every rank's positives: (score, group id) pairs, padded to the largest
   count: 16 bytes per positive of the largest rank, times the world size;
3. all_reduce (sum) of fp(i), the P false-positive sums of pass 1, plus the error flag
   of pass 1 (a non-finite negative): 8 (P + 1) bytes.

Every rank then runs the same positive stage on the same data, so the loss is bitwise
identical on every rank, and each rank's backward (pass 2 over its own entries) gives
its slice of the single-process gradient over the concatenated inputs.

DistributedDataParallel averages parameter gradients over ranks. Each rank's scores get
their slice of the global gradient, so the SUM over ranks of the parameter gradients is
the single-process gradient on the global batch, and DDP's average is that divided by the
world size. To get exactly the single-process gradient, multiply the loss by the world
size before ``backward()``: ``(loss * dist.get_world_size(pg)).backward()``.
"""

import torch
import torch.distributed as dist

from . import _contract


class RemoteRankError(RuntimeError):
    """Raised on the ranks whose own input was fine when another rank's was not."""


def _all_gather_fixed(tensor, group):
    world = dist.get_world_size(group)
    out = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(out, tensor, group=group)
    return out


def _local_group_codes(scores, group_ids):
    """Local dense codes of group_ids (small, broadcastable) and the ids they stand for;
    none for a single ranking (its positives all carry id 0)."""
    if group_ids is None:
        return None, torch.zeros(1, dtype=torch.int64, device=scores.device)
    if group_ids.numel() > 0 and int(group_ids.min()) < 0:
        raise ValueError(f"ap_loss: group_ids must be >= 0, found {int(group_ids.min())}")
    unique, inverse = torch.unique(group_ids, sorted=True, return_inverse=True)
    return inverse.to(torch.int32), unique.to(torch.int64)


def _gather_local(scores, labels, group_ids, delta, interpolate, method):
    """Validation and the gather: everything a rank does before it first talks."""
    _contract.validate(scores, labels, delta, method)
    _contract.validate_group_ids(group_ids, scores, method)
    delta = float(delta)
    if method == "pairwise":
        raise ValueError("ap_loss: process_group works with method 'sorted' or 'auto'")
    codes, ids = _local_group_codes(scores, group_ids)
    gathered = torch.ops.aploss.gather(scores, labels, codes)
    positive_ids = ids[gathered[1].to(torch.int64)]
    return delta, gathered[0], positive_ids


def _exchange_positives(local, error, device, group):
    """Steps 1 and 2: every rank's positives, in rank order, as (scores, ids)."""
    count = 0 if local is None else local[1].numel()
    meta = torch.tensor([count, 1 if error is not None else 0], dtype=torch.int64, device=device)
    metas = _all_gather_fixed(meta, group)
    counts = [int(m[0]) for m in metas]
    failed = [rank for rank, m in enumerate(metas) if int(m[1]) != 0]
    if error is not None:
        raise error
    if failed:
        raise RemoteRankError(
            f"ap_loss: rank(s) {failed} of the process group rejected their input; see their error"
        )
    width = max(counts)
    if width == 0:
        empty = torch.empty(0, dtype=torch.float64, device=device)
        return empty, empty.to(torch.int64)
    _, scores, ids = local
    # One float64 buffer: row 0 the scores, row 1 the int64 ids bit-cast (exact).
    packed = torch.zeros((2, width), dtype=torch.float64, device=device)
    packed[0, : scores.numel()] = scores
    packed[1, : ids.numel()] = ids.view(torch.float64)
    rows = _all_gather_fixed(packed, group)
    all_scores = torch.cat([row[0, :c] for row, c in zip(rows, counts)])
    all_ids = torch.cat([row[1, :c].contiguous().view(torch.int64) for row, c in zip(rows, counts)])
    return all_scores, all_ids


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


class _DistributedAPLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, labels, group_ids, group, delta, interpolate, method):
        # (a non-tensor `scores` is reported by the validation below)
        device = scores.device if isinstance(scores, torch.Tensor) else torch.device("cpu")
        local, error = None, None
        try:
            local = _gather_local(scores, labels, group_ids, delta, interpolate, method)
        except (TypeError, ValueError, RuntimeError) as e:  # raised after telling the others
            error = e
        all_scores, all_ids = _exchange_positives(local, error, device, group)
        if local is not None:
            delta = local[0]
        ctx.delta, ctx.method = delta, method
        if all_scores.numel() == 0:
            ctx.has_positives = False
            ctx.save_for_backward(scores, labels)
            return scores.new_zeros(())

        codes, unique, num_groups = _global_codes(group_ids, all_ids, device)
        positive_codes = torch.searchsorted(unique, all_ids).to(torch.float64)
        # Positions: the rank-major order of the exchange, so ties sort alike on every rank.
        order = torch.arange(all_scores.numel(), dtype=torch.float64, device=device)
        positives, offsets, positive_group, *_ = torch.ops.aploss.rank_positives(
            torch.stack([all_scores, positive_codes, order]), num_groups, delta
        )
        # Pass 1 over this rank's entries; a non-finite negative is reported, not raised,
        # until every rank knows (the flag rides in the last element of the all_reduce).
        try:
            fp = torch.ops.aploss.pass1(
                scores, labels, codes, positives, offsets, positive_group, delta, "sorted"
            )
            flag = 0.0
            error = None
        except ValueError as e:
            fp = torch.zeros(positives.shape[1], dtype=torch.float64, device=device)
            flag, error = 1.0, e
        reduced = torch.cat([fp, fp.new_full((1,), flag)])
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
        if error is not None:
            raise error
        if float(reduced[-1]) != 0.0:
            raise RemoteRankError(
                "ap_loss: another rank of the process group found a non-finite score"
            )
        loss, state = torch.ops.aploss.positive_stage(
            positives, offsets, positive_group, reduced[:-1], delta, interpolate, scores.dtype,
            "sorted",
        )
        ctx.has_positives = True
        ctx.save_for_backward(scores, labels, codes, state, offsets)  # codes: None if single
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if not ctx.has_positives:
            scores, _ = ctx.saved_tensors
            return torch.zeros_like(scores), None, None, None, None, None, None
        scores, labels, codes, state, offsets = ctx.saved_tensors
        grad = torch.ops.aploss.pass2(
            grad_loss, scores, labels, codes, state, offsets, None, ctx.delta, "sorted"
        )
        return grad, None, None, None, None, None, None


def ap_loss_across_ranks(scores, labels, group_ids, process_group, delta, interpolate, method):
    """``ap_loss`` with ``process_group`` (see the module docstring); called by ap_loss."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("ap_loss: process_group given but torch.distributed is not initialized")
    return _DistributedAPLoss.apply(
        scores, labels, group_ids, process_group, delta, interpolate, method
    )
