"""Ranking-based losses for torchvision's RetinaNet: AP-loss, Rank & Sort loss, aLRP loss.

    from aploss_cuda.integrations.torchvision import use_ap_loss, use_alrp_loss, use_rank_sort_loss
    model = torchvision.models.detection.retinanet_resnet50_fpn(num_classes=K)
    # one of:
    use_ap_loss(model, delta=1.0)                    # AP-loss; box regression unchanged
    use_rank_sort_loss(model, delta=0.5)             # RS loss, score-weighted GIoU box loss
    use_alrp_loss(model, sb_period=iters_per_epoch)  # aLRP loss, self-balanced

Each loss is one call over the stacked (images, anchors, classes) logits: one ranking of
every anchor x class of the batch, the papers' minibatch setting. The labels come from
torchvision's matcher: a foreground anchor is positive in its ground-truth class's column
and negative in the others, a background anchor is negative everywhere, an anchor between
the IoU thresholds is ignored (-1) everywhere. The forward pass, the anchors, the matcher
and the cls_logits prior-probability bias init are torchvision's.

``APLossClassificationHead`` replaces ``RetinaNetClassificationHead.compute_loss`` (sigmoid
focal loss, normalised per image) with ``ap_loss``; box regression stays torchvision's.

RS loss and aLRP loss also need the box branch (RS's targets are the IoUs of the predicted
boxes; aLRP weighs its classification gradient and its localisation component by the
positives' box losses), so ``RankSortLossHead`` and ``ALRPLossHead`` replace
``RetinaNetHead.compute_loss`` (both branches' losses) and follow the authors' released
heads:

- RS (``rank_sort_loss``): a positive entry's target is the IoU of its anchor's predicted
  box (the regression output decoded at the anchor with the model's box coder, detached)
  with the matched ground-truth box. Box loss: GIoU loss of each foreground anchor's
  predicted box, weighted by that anchor's highest class score (sigmoid, detached) and
  normalised by the sum of the weights, then scaled by the detached ratio
  RS loss / box loss, recomputed every iteration, so that its value equals the RS loss's.
- aLRP (``alrp_loss``): the regression losses are the foreground anchors' GIoU losses / 2,
  divided by 1 - tau (tau = 0.5, as released, which leaves the GIoU loss itself); the box
  loss is SB * the localisation component, SB a self-balancing weight that the head keeps
  and updates every ``sb_period`` training iterations (see ``ALRPLossHead``).

Ranking losses only order the logits; their absolute level is not calibrated. torchvision's
RetinaNet drops detections whose sigmoid score is below ``score_thresh`` (0.05 by
default), which can drop a whole image's detections from such a model; evaluate with a
low ``score_thresh`` (``model.score_thresh = 0.0`` keeps the top-k per level).
"""

import torch

try:
    import torchvision  # noqa: F401
except ImportError as error:
    raise ImportError(
        "aploss_cuda.integrations.torchvision needs torchvision (the [torchvision] extra: "
        "pip install --no-build-isolation '.[torchvision]')"
    ) from error
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.retinanet import (
    RetinaNet,
    RetinaNetClassificationHead,
    RetinaNetHead,
)
from torchvision.ops import box_area, generalized_box_iou_loss

from ..loss import alrp_loss, ap_loss, rank_sort_loss

__all__ = [
    "ALRPLossHead",
    "APLossClassificationHead",
    "RankSortLossHead",
    "foreground_boxes",
    "matched_idxs_to_labels",
    "paired_box_iou",
    "rank_sort_targets",
    "use_alrp_loss",
    "use_ap_loss",
    "use_rank_sort_loss",
]

# torchvision's Matcher codes (det_utils.Matcher): an anchor index >= 0 is foreground.
BELOW_LOW_THRESHOLD = det_utils.Matcher.BELOW_LOW_THRESHOLD  # -1: background
BETWEEN_THRESHOLDS = det_utils.Matcher.BETWEEN_THRESHOLDS  # -2: ignored

# Floor of the RS box loss's normalisers (the sum of the score weights, the box loss value).
RS_BOX_EPS = 1e-12


def matched_idxs_to_labels(matched_idxs, gt_labels, num_classes):
    """AP-loss labels (int8, shape (anchors, num_classes)) of one image's anchors.

    Args:
        matched_idxs: int64 (anchors,), the matcher's output: the index of the matched
            ground-truth box (>= 0), BELOW_LOW_THRESHOLD (-1) or BETWEEN_THRESHOLDS (-2).
        gt_labels: int64 (boxes,), the class of each ground-truth box (0 <= c < num_classes).
        num_classes: number of class columns of the logits.
    """
    labels = torch.zeros(
        (matched_idxs.numel(), num_classes), dtype=torch.int8, device=matched_idxs.device
    )
    foreground = matched_idxs >= 0
    labels[foreground, gt_labels[matched_idxs[foreground]]] = 1
    # Ignored anchors are ignored for every class, as focal loss drops their whole row.
    labels[matched_idxs == BETWEEN_THRESHOLDS] = -1
    return labels


def _batch_labels(targets, matched_idxs, num_classes):
    """The labels of every image, stacked: (images, anchors, classes)."""
    return torch.stack(
        [matched_idxs_to_labels(m, t["labels"], num_classes) for t, m in zip(targets, matched_idxs)]
    )


def foreground_boxes(targets, bbox_regression, anchors, matched_idxs, box_coder):
    """The predicted and the matched ground-truth box of every foreground anchor of the batch.

    Args:
        targets: torchvision's per-image target dicts (their "boxes").
        bbox_regression: (images, anchors, 4), the regression branch's output.
        anchors: per-image (anchors, 4) anchor boxes; matched_idxs: the matcher's output.
        box_coder: decodes the regression output at its anchor.

    Returns:
        (predicted, matched), each (P, 4) in x1y1x2y2: images in order, anchors in order
        within an image, which is the memory order of the positive entries of the stacked
        (images, anchors, classes) labels (one positive per foreground anchor).
        ``predicted`` keeps its gradient.
    """
    foreground = torch.stack(matched_idxs) >= 0
    predicted = box_coder.decode_single(bbox_regression[foreground], torch.stack(anchors)[foreground])
    matched = torch.cat([t["boxes"][m[m >= 0]] for t, m in zip(targets, matched_idxs)])
    return predicted, matched


def paired_box_iou(boxes1, boxes2):
    """IoU of boxes1[k] with boxes2[k], both (P, 4) in x1y1x2y2 (not all pairs)."""
    top_left = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    bottom_right = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    return intersection / (box_area(boxes1) + box_area(boxes2) - intersection)


def rank_sort_targets(labels, ious):
    """RS-loss targets: ``labels`` (1/0/-1) with each positive entry replaced by its IoU.

    ``ious`` holds one value per positive entry in memory order (as ``foreground_boxes``
    orders them); the targets take its dtype. A positive whose predicted box misses its
    ground truth (IoU 0) becomes a negative, as in the released RS heads.
    """
    targets = labels.to(ious.dtype)
    targets[labels == 1] = ious
    return targets


def _score_weighted_box_loss(box_losses, positive_logits):
    """Mean of ``box_losses`` weighted by each positive's highest class score (detached)."""
    weights = positive_logits.detach().sigmoid().amax(dim=1)
    total = weights.sum()
    total = torch.where(total < RS_BOX_EPS, torch.ones_like(total), total)
    return (weights * box_losses).sum() / total


class APLossClassificationHead(RetinaNetClassificationHead):
    """RetinaNet classification head trained with ``ap_loss`` instead of focal loss.

    Args:
        in_channels, num_anchors, num_classes, prior_probability, norm_layer: as
            ``RetinaNetClassificationHead``.
        delta: half-width of AP-loss's piecewise-linear step.
        **ap_loss_kwargs: passed to ``aploss_cuda.ap_loss`` (``interpolate``, ``method``).
    """

    def __init__(
        self,
        in_channels,
        num_anchors,
        num_classes,
        prior_probability=0.01,
        norm_layer=None,
        *,
        delta=1.0,
        **ap_loss_kwargs,
    ):
        super().__init__(
            in_channels, num_anchors, num_classes, prior_probability, norm_layer=norm_layer
        )
        self.delta = float(delta)
        self.ap_loss_kwargs = dict(ap_loss_kwargs)

    @classmethod
    def from_head(cls, head, *, delta=1.0, **ap_loss_kwargs):
        """An AP-loss head that shares ``head``'s modules (its weights and norm layers)."""
        new = cls(
            head.cls_logits.in_channels,
            head.num_anchors,
            head.num_classes,
            delta=delta,
            **ap_loss_kwargs,
        )
        # Reuse the modules themselves rather than copying weights: the tower may use a
        # norm layer that in_channels alone cannot rebuild.
        new.conv = head.conv
        new.cls_logits = head.cls_logits
        return new

    def compute_loss(self, targets, head_outputs, matched_idxs):
        cls_logits = head_outputs["cls_logits"]  # (images, anchors, classes)
        labels = _batch_labels(targets, matched_idxs, self.num_classes)
        # One call: every image's anchors x classes form ONE ranking (not a per-image mean).
        return ap_loss(cls_logits, labels, delta=self.delta, **self.ap_loss_kwargs)

    def extra_repr(self):
        kwargs = "".join(f", {k}={v!r}" for k, v in self.ap_loss_kwargs.items())
        return f"delta={self.delta}{kwargs}"


class _BothBranchesLossHead(RetinaNetHead):
    """A RetinaNetHead whose one compute_loss computes both branches' losses together."""

    def __init__(self, in_channels, num_anchors, num_classes, norm_layer=None):
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=norm_layer)
        self.box_coder = self.regression_head.box_coder

    @classmethod
    def from_head(cls, head, *, box_coder=None, **loss_kwargs):
        """A head that shares ``head``'s two branches (their modules and weights).

        ``box_coder`` decodes the regression output for the loss: pass the model's (the one
        inference decodes with); by default the regression branch's own.
        """
        classification = head.classification_head
        new = cls(
            classification.cls_logits.in_channels,
            classification.num_anchors,
            classification.num_classes,
            **loss_kwargs,
        )
        # Reuse the branches themselves (GroupNorm towers included), as from_head above.
        new.classification_head = head.classification_head
        new.regression_head = head.regression_head
        new.box_coder = box_coder if box_coder is not None else head.regression_head.box_coder
        return new

    @property
    def num_classes(self):
        return self.classification_head.num_classes


class RankSortLossHead(_BothBranchesLossHead):
    """RetinaNet head trained with ``rank_sort_loss`` and a score-weighted GIoU box loss.

    ``compute_loss`` returns {"classification": RS loss (ranking + sorting, carrying the
    whole error-driven gradient), "bbox_regression": the box loss}:

    - RS targets: in a foreground anchor's ground-truth class column, the IoU of its
      predicted box (decoded at the anchor, detached) with the matched box; 0 in the other
      columns and for background anchors; -1 in every column of an ignored anchor.
    - box loss: as the released RS heads compute it, sum_k w_k GIoU_k / sum_k w_k over the
      foreground anchors k, w_k the highest sigmoid class score of anchor k (detached; the
      sum taken as 1 if below 1e-12), times the detached ratio RS loss / box loss
      (recomputed every iteration), so it has the RS loss's value and the gradient of the
      weighted GIoU loss scaled by that ratio.

    Args:
        in_channels, num_anchors, num_classes, norm_layer: as ``RetinaNetHead``.
        delta: half-width of RS loss's piecewise-linear step.
    """

    def __init__(self, in_channels, num_anchors, num_classes, norm_layer=None, *, delta=0.5):
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=norm_layer)
        self.delta = float(delta)

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
        cls_logits = head_outputs["cls_logits"]  # (images, anchors, classes)
        bbox_regression = head_outputs["bbox_regression"]  # (images, anchors, 4)
        labels = _batch_labels(targets, matched_idxs, self.num_classes)
        predicted, matched = foreground_boxes(
            targets, bbox_regression, anchors, matched_idxs, self.box_coder
        )
        ious = paired_box_iou(predicted.detach(), matched).to(cls_logits.dtype)
        # One call: every image's anchors x classes form ONE ranking (not a per-image mean).
        classification = rank_sort_loss(
            cls_logits, rank_sort_targets(labels, ious), delta=self.delta
        )
        if matched.numel() == 0:  # keeps the box branch in the graph, with zero gradient
            return {"classification": classification, "bbox_regression": bbox_regression.sum() * 0}

        foreground = torch.stack(matched_idxs) >= 0
        box_loss = _score_weighted_box_loss(
            generalized_box_iou_loss(predicted, matched, reduction="none"), cls_logits[foreground]
        )
        balance = classification.detach() / box_loss.detach().clamp(min=RS_BOX_EPS)
        return {"classification": classification, "bbox_regression": box_loss * balance}

    def extra_repr(self):
        return f"delta={self.delta}"


class ALRPLossHead(_BothBranchesLossHead):
    """RetinaNet head trained with ``alrp_loss``: classification and localisation components.

    ``compute_loss`` returns {"classification": cls_loss, "bbox_regression":
    SB * loc_loss} of one ``alrp_loss`` call, with regression_losses the foreground
    anchors' GIoU losses (predicted box decoded at the anchor vs matched box) / 2 /
    (1 - tau), in the memory order of the positive entries of the labels (image-major).

    SB, the self-balancing weight, is this head's state, not the loss function's: it
    starts at ``sb_weight`` and, as in the released aLRP heads, every training call with
    at least one positive records the two losses' values; when ``sb_period`` calls have
    been recorded, SB becomes (mean loc_loss + mean cls_loss) / mean loc_loss over them
    (kept if that mean is 0) and the records start again. The call that completes a
    period already uses the new SB. Calls in eval mode record nothing. SB and the records
    are plain attributes (``sb_weight``), not in the state_dict: save them with a
    checkpoint to resume training.

    Args:
        in_channels, num_anchors, num_classes, norm_layer: as ``RetinaNetHead``.
        sb_period: training calls between SB updates; the released heads use one epoch.
        delta: half-width of aLRP loss's piecewise-linear step.
        sb_weight: initial SB (the released heads: 50).
        tau: the IoU threshold of a true positive in LRP's normalisation (released: 0.5).
    """

    def __init__(
        self,
        in_channels,
        num_anchors,
        num_classes,
        norm_layer=None,
        *,
        sb_period,
        delta=1.0,
        sb_weight=50.0,
        tau=0.5,
    ):
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=norm_layer)
        if int(sb_period) < 1:
            raise ValueError(f"sb_period must be >= 1, got {sb_period}")
        self.sb_period = int(sb_period)
        self.delta = float(delta)
        self.sb_weight = float(sb_weight)
        self.tau = float(tau)
        self._reset_records()

    def _reset_records(self):
        self._recorded = 0
        self._cls_sum = 0.0
        self._loc_sum = 0.0

    def update_sb_weight(self, cls_loss, loc_loss):
        """Records one iteration's loss values; updates SB when a period is complete."""
        # Running sums on the losses' device: no host sync until a period ends.
        self._cls_sum = self._cls_sum + cls_loss
        self._loc_sum = self._loc_sum + loc_loss
        self._recorded += 1
        if self._recorded == self.sb_period:
            # (mean loc + mean cls) / mean loc: the count cancels.
            if float(self._loc_sum) > 0:
                self.sb_weight = float((self._loc_sum + self._cls_sum) / self._loc_sum)
            self._reset_records()

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
        cls_logits = head_outputs["cls_logits"]  # (images, anchors, classes)
        labels = _batch_labels(targets, matched_idxs, self.num_classes)
        predicted, matched = foreground_boxes(
            targets, head_outputs["bbox_regression"], anchors, matched_idxs, self.box_coder
        )
        # GIoU loss lies in [0, 2]: / 2 to [0, 1], / (1 - tau) as LRP normalises.
        regression_losses = generalized_box_iou_loss(predicted, matched, reduction="none")
        regression_losses = regression_losses / (2 * (1 - self.tau))
        # One call: every image's anchors x classes form ONE ranking (not a per-image mean).
        cls_loss, loc_loss = alrp_loss(
            cls_logits, labels, regression_losses.to(cls_logits.dtype), delta=self.delta
        )
        if self.training and matched.numel() > 0:
            self.update_sb_weight(cls_loss.detach(), loc_loss.detach())
        return {"classification": cls_loss, "bbox_regression": self.sb_weight * loc_loss}

    def extra_repr(self):
        return (
            f"delta={self.delta}, sb_period={self.sb_period}, sb_weight={self.sb_weight}, "
            f"tau={self.tau}"
        )


def _per_branch_head(head):
    """A torchvision RetinaNetHead around ``head``'s two branches (no new modules built)."""
    plain = RetinaNetHead.__new__(RetinaNetHead)
    torch.nn.Module.__init__(plain)
    plain.classification_head = head.classification_head
    plain.regression_head = head.regression_head
    return plain


def _check_retinanet(model, caller):
    if not isinstance(model, RetinaNet):
        raise TypeError(f"{caller}: expected a torchvision RetinaNet, got {type(model).__name__}")


def use_ap_loss(model, *, delta=1.0, **ap_loss_kwargs):
    """Switch a RetinaNet's classification loss to AP-loss, in place; returns the model.

    The classification tower and cls_logits layer (and their weights) are kept; only the
    loss changes. ``delta`` and ``**ap_loss_kwargs`` go to ``aploss_cuda.ap_loss``.
    """
    _check_retinanet(model, "use_ap_loss")
    if isinstance(model.head, _BothBranchesLossHead):
        # Back to per-branch losses: an RS or aLRP head would never call the new one.
        model.head = _per_branch_head(model.head)
    model.head.classification_head = APLossClassificationHead.from_head(
        model.head.classification_head, delta=delta, **ap_loss_kwargs
    )
    return model


def use_rank_sort_loss(model, *, delta=0.5):
    """Switch a RetinaNet's losses to RS loss and its box loss, in place; returns the model.

    Both branches (and their weights) are kept; only the losses change (see
    ``RankSortLossHead``). ``delta`` goes to ``aploss_cuda.rank_sort_loss``.
    """
    _check_retinanet(model, "use_rank_sort_loss")
    model.head = RankSortLossHead.from_head(model.head, box_coder=model.box_coder, delta=delta)
    return model


def use_alrp_loss(model, *, sb_period, delta=1.0, sb_weight=50.0, tau=0.5):
    """Switch a RetinaNet's losses to aLRP loss, in place; returns the model.

    Both branches (and their weights) are kept; only the losses change (see
    ``ALRPLossHead``). ``sb_period``: training iterations between updates of the
    self-balancing weight (the released heads: one epoch); ``sb_weight``: its initial
    value; ``delta`` goes to ``aploss_cuda.alrp_loss``.
    """
    _check_retinanet(model, "use_alrp_loss")
    model.head = ALRPLossHead.from_head(
        model.head,
        box_coder=model.box_coder,
        sb_period=sb_period,
        delta=delta,
        sb_weight=sb_weight,
        tau=tau,
    )
    return model
