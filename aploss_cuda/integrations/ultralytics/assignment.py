"""What YOLO's loss computes on its way to the classification term, taken as it passes.

``v8DetectionLoss.get_assigned_targets_and_loss`` calls three collaborators held as
attributes: ``self.assigner`` (the TaskAlignedAssigner), ``self.bce`` (BCEWithLogitsLoss
over (images, anchors, classes)) and ``self.bbox_loss`` (CIoU + DFL). The ranking losses
replace ``self.bce`` with ``ClassificationInputs`` (which keeps the logits and adds
nothing) and wrap the other two in ``Recorded`` (which keeps the call), so YOLO's own code
still assigns and computes the box terms; ``Assignment`` then gives the ranking losses
their inputs from what was kept.
"""

from dataclasses import dataclass

import torch


class Recorded:
    """Calls ``fn`` and keeps the arguments and the result of its last call."""

    def __init__(self, fn):
        self.fn = fn
        self.last = None

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.last = (args, out)
        return out

    def take(self):
        """(args, result) of the last call, forgotten here (no tensor outlives the step)."""
        last, self.last = self.last, None
        if last is None:
            raise RuntimeError(f"{type(self.fn).__name__} was not called")
        return last

    def __getattr__(self, name):  # the wrapped object's attributes (assigner.topk, ...)
        if name in ("fn", "last"):  # not set yet while unpickling: no recursion
            raise AttributeError(name)
        return getattr(self.fn, name)


class ClassificationInputs:
    """Stands in for YOLO's ``BCEWithLogitsLoss``: keeps the logits, adds 0 to the loss.

    It returns zeros of shape (1, 1, classes), which YOLO sums (and multiplies in place by
    its class weights when ``cls_pw`` is set, which has no effect on a ranking loss).
    """

    logits = None

    def __call__(self, logits, targets):
        self.logits = logits
        return logits.new_zeros((1, 1, logits.shape[-1]))

    def take(self):
        logits, self.logits = self.logits, None
        if logits is None:
            raise RuntimeError("the classification term was not computed")
        return logits


@dataclass
class Assignment:
    """One batch's classification logits and TaskAlignedAssigner output.

    logits: (images, anchors, classes), float32 (half-precision logits are cast: see
        ``float32_logits``), with their gradient.
    target_scores: (images, anchors, classes) float32, the assigner's soft targets: at a
        foreground anchor's assigned class its normalised alignment metric, else 0.
    fg_mask: (images, anchors) bool; target_labels: (images, anchors) the assigned class.
    pred_bboxes, target_bboxes: (images, anchors, 4) xyxy, the decoded predictions (with
        their gradient) and the assigned boxes, as YOLO's box loss receives them.
    """

    logits: torch.Tensor
    target_scores: torch.Tensor
    fg_mask: torch.Tensor
    target_labels: torch.Tensor
    pred_bboxes: torch.Tensor
    target_bboxes: torch.Tensor

    @property
    def foreground(self):
        """(image, anchor) indices of the foreground anchors, image-major: the row-major
        order of the positive entries of ``labels()``, and the order of YOLO's box loss."""
        return self.fg_mask.nonzero(as_tuple=True)

    def labels(self):
        """int8 (images, anchors, classes): 1 at each foreground anchor's assigned class,
        0 everywhere else (YOLO ignores nothing)."""
        labels = torch.zeros(self.logits.shape, dtype=torch.int8, device=self.logits.device)
        image, anchor = self.foreground
        labels[image, anchor, self.target_labels[image, anchor].long()] = 1
        return labels

    def rank_sort_targets(self):
        """The soft targets as Rank & Sort targets: > 0 positive, 0 negative.

        A foreground anchor whose target is 0 (the alignment metric underflowed, or its
        CIoU, clamped at 0 by the assigner, was 0) is a negative in every class, as YOLO's
        BCE treats it (target 0) and as the released RS heads treat a positive of IoU 0.
        The clamp only guards rounding: the assigner's targets do not exceed 1.
        """
        return self.target_scores.clamp(max=1.0)

    def group_ids(self, per_image):
        """None (one ranking over the batch) or one id per image."""
        if not per_image:
            return None
        return torch.arange(self.logits.shape[0], device=self.logits.device)[:, None, None]


def float32_logits(logits):
    """The logits in float32 for the ranking losses (a copy only for 16-bit logits).

    Under mixed precision YOLO's logits are float16 and its loss is scaled by the gradient
    scaler (65536 at first) times the batch size before ``backward()``: as a float16
    ``grad_output`` that overflows (float16 ends at 65504). In float32 the scaled
    gradient is computed per entry and rounded to float16 only on its way back to the
    logits, where the scale keeps entries of ~1e-8 (a ranking of millions of entries)
    above float16's smallest subnormal (6e-8).
    """
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
