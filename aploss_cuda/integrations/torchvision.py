"""AP-loss for torchvision's RetinaNet: one ranking over every anchor x class of the batch.

    from aploss_cuda.integrations.torchvision import use_ap_loss
    model = torchvision.models.detection.retinanet_resnet50_fpn(num_classes=K)
    use_ap_loss(model, delta=1.0)        # the classification loss is now ap_loss

``APLossClassificationHead`` replaces ``RetinaNetClassificationHead.compute_loss`` (sigmoid
focal loss, normalised per image) with a single ``ap_loss`` call over the stacked
(images, anchors, classes) logits, the paper's minibatch setting. The labels come from
torchvision's matcher: a foreground anchor is 1 in its ground-truth class's column and 0
in the others, a background anchor is 0 everywhere, an anchor between the IoU
thresholds is -1 (ignored) everywhere. The forward pass, the box-regression branch and
the cls_logits prior-probability bias init (the paper keeps it) are torchvision's.

AP-loss only orders the logits; their absolute level is not calibrated. torchvision's
RetinaNet drops detections whose sigmoid score is below ``score_thresh`` (0.05 by
default), which can drop a whole image's detections from an AP-loss model; evaluate
with a low ``score_thresh`` (``model.score_thresh = 0.0`` keeps the top-k per level).
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
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetClassificationHead

from ..loss import ap_loss

__all__ = ["APLossClassificationHead", "matched_idxs_to_labels", "use_ap_loss"]

# torchvision's Matcher codes (det_utils.Matcher): an anchor index >= 0 is foreground.
BELOW_LOW_THRESHOLD = det_utils.Matcher.BELOW_LOW_THRESHOLD  # -1: background
BETWEEN_THRESHOLDS = det_utils.Matcher.BETWEEN_THRESHOLDS  # -2: ignored


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
        labels = torch.stack(
            [
                matched_idxs_to_labels(m, t["labels"], self.num_classes)
                for t, m in zip(targets, matched_idxs)
            ]
        )
        # One call: every image's anchors x classes form ONE ranking (not a per-image mean).
        return ap_loss(cls_logits, labels, delta=self.delta, **self.ap_loss_kwargs)

    def extra_repr(self):
        kwargs = "".join(f", {k}={v!r}" for k, v in self.ap_loss_kwargs.items())
        return f"delta={self.delta}{kwargs}"


def use_ap_loss(model, *, delta=1.0, **ap_loss_kwargs):
    """Switch a RetinaNet's classification loss to AP-loss, in place; returns the model.

    The classification tower and cls_logits layer (and their weights) are kept; only the
    loss changes. ``delta`` and ``**ap_loss_kwargs`` go to ``aploss_cuda.ap_loss``.
    """
    if not isinstance(model, RetinaNet):
        raise TypeError(f"use_ap_loss: expected a torchvision RetinaNet, got {type(model).__name__}")
    model.head.classification_head = APLossClassificationHead.from_head(
        model.head.classification_head, delta=delta, **ap_loss_kwargs
    )
    return model
