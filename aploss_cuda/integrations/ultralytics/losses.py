"""YOLO's detection loss (``v8DetectionLoss``) with a ranking-based classification term.

YOLO's own code still assigns (TaskAlignedAssigner) and computes the box terms (CIoU and
DFL, or L1 for DFL-free heads, weighted by the soft targets); only the BCE term is
replaced (``assignment.py`` says how). The third term, DFL, always keeps the ratio to the
box term that YOLO's gains give it (``hyp.dfl`` : ``hyp.box``); what each loss changes:

- ``APDetectionLoss``: ``ap_loss``, positives the foreground anchors at their assigned
  class. Box and DFL terms are YOLO's, unchanged: the AP-loss paper replaced only the
  classification loss of its detector.
- ``RankSortDetectionLoss``: ``rank_sort_loss`` with the assigner's soft targets as the
  positives' targets. Box and DFL terms rescaled every step by the detached ratio
  RS loss / (box + DFL), so that together they have the RS loss's value: the released RS
  heads' tuning-free balance (lambda = L_RS / L_box).
- ``ALRPDetectionLoss``: ``alrp_loss`` with AP-loss's positives and, as each positive's
  regression loss, its 1 - CIoU (the CIoU of YOLO's box loss) / (2 (1 - tau)). The box
  term is SB x the localisation component, SB the released self-balancing weight (50 at
  first, then once an epoch (mean loc + mean cls) / mean loc of that epoch's steps).

Each ranking loss enters at weight 1 as in its paper; ``hyp.cls`` (``cls=``), a gain
tuned for BCE's scale, is not applied, and ``cls_pw`` class weights have no effect. One
ranking over every anchor x class of the batch by default (the papers' minibatch
setting); ``per_image=True`` ranks each image separately (``group_ids``).
"""

import torch
from ultralytics.utils.loss import E2ELoss, v8DetectionLoss
from ultralytics.utils.metrics import bbox_iou

from ...loss import alrp_loss, ap_loss, rank_sort_loss
from .assignment import Assignment, ClassificationInputs, Recorded, float32_logits

# Floor of the denominators of the detached balancing ratios.
BALANCE_EPS = 1e-12


def _rescaled(term, reference, target):
    """``term`` times the detached ratio target / reference (0 where reference is 0)."""
    return term * (target.detach() / reference.detach().clamp(min=BALANCE_EPS))


class RankingDetectionLoss(v8DetectionLoss):
    """``v8DetectionLoss`` whose classification term is ``classification_terms``'s.

    Args:
        model: the DetectionModel (as for ``v8DetectionLoss``).
        tal_topk, tal_topk2: the assigner's top-k (``E2ELoss`` sets them per branch).
        delta: half-width of the ranking loss's piecewise-linear step.
        per_image: one ranking per image instead of one over the batch.
    """

    default_delta = 1.0

    def __init__(self, model, tal_topk=10, tal_topk2=None, *, delta=None, per_image=False):
        super().__init__(model, tal_topk, tal_topk2)
        self.delta = float(self.default_delta if delta is None else delta)
        self.per_image = bool(per_image)
        self.bce = ClassificationInputs()
        self.assigner = Recorded(self.assigner)
        self.bbox_loss = Recorded(self.bbox_loss)

    def _take_assignment(self):
        logits = self.bce.take()
        _, (target_labels, _, target_scores, fg_mask, _) = self.assigner.take()
        (_, pred_bboxes, _, target_bboxes, *_), _ = self.bbox_loss.take()
        return Assignment(
            logits=float32_logits(logits),
            target_scores=target_scores.float(),
            fg_mask=fg_mask,
            target_labels=target_labels,
            pred_bboxes=pred_bboxes,
            target_bboxes=target_bboxes,
        )

    def get_assigned_targets_and_loss(self, preds, batch, **assign_kwargs):
        """As ``v8DetectionLoss``'s, with the (box, cls, dfl) terms of this loss."""
        assigned, yolo_terms, _ = super().get_assigned_targets_and_loss(preds, batch, **assign_kwargs)
        assignment = self._take_assignment()
        box, cls, dfl = self.classification_terms(assignment, yolo_terms[0], yolo_terms[2])
        loss = torch.stack((box, cls.to(box.dtype), dfl))
        return assigned, loss, dict(zip(self.loss_names, loss.detach()))

    def classification_terms(self, assignment, box, dfl):
        """(box, cls, dfl) from YOLO's gain-weighted box and DFL terms."""
        raise NotImplementedError

    def group_ids(self, assignment):
        return assignment.group_ids(self.per_image)


class APDetectionLoss(RankingDetectionLoss):
    """AP-loss (``ap_loss``) as YOLO's classification term; box and DFL terms YOLO's."""

    default_delta = 1.0

    def classification_terms(self, assignment, box, dfl):
        cls = ap_loss(
            assignment.logits, assignment.labels(), delta=self.delta,
            group_ids=self.group_ids(assignment),
        )
        return box, cls, dfl


class RankSortDetectionLoss(RankingDetectionLoss):
    """Rank & Sort loss (``rank_sort_loss``) on the assigner's soft targets; box + DFL
    rescaled to the RS loss's value every step."""

    default_delta = 0.5

    def classification_terms(self, assignment, box, dfl):
        cls = rank_sort_loss(
            assignment.logits, assignment.rank_sort_targets(), delta=self.delta,
            group_ids=self.group_ids(assignment),
        )
        localisation = box + dfl
        return _rescaled(box, localisation, cls), cls, _rescaled(dfl, localisation, cls)


class ALRPDetectionLoss(RankingDetectionLoss):
    """aLRP loss (``alrp_loss``): its classification component, and SB x its localisation
    component on the positives' 1 - CIoU as the box term.

    SB, the self-balancing weight, is this object's state: it starts at ``sb_weight``;
    every training step with a positive (logits that require grad: not validation)
    records the two components' values, and ``update()``, which YOLO's trainer calls at
    the end of every epoch, sets SB to (mean loc + mean cls) / mean loc over the steps
    recorded (kept when nothing was recorded or that mean is 0) and starts again, as the
    released heads do once an epoch. SB is not saved in checkpoints: a resumed run starts
    again from ``sb_weight``.

    Args (besides ``RankingDetectionLoss``'s):
        sb_weight: the initial SB (released: 50).
        tau: the IoU threshold of LRP's normalisation (released: 0.5, which leaves 1 - CIoU).
    """

    default_delta = 1.0

    def __init__(self, model, tal_topk=10, tal_topk2=None, *, delta=None, per_image=False,
                 sb_weight=50.0, tau=0.5):
        super().__init__(model, tal_topk, tal_topk2, delta=delta, per_image=per_image)
        self.sb_weight = float(sb_weight)
        self.tau = float(tau)
        self._reset_records()

    def _reset_records(self):
        self._recorded = 0
        self._cls_sum = 0.0
        self._loc_sum = 0.0

    def regression_losses(self, assignment):
        """One value per positive, in the order of the positive entries: (1 - CIoU) / (2 (1 - tau))."""
        image, anchor = assignment.foreground
        ciou = bbox_iou(
            assignment.pred_bboxes[image, anchor], assignment.target_bboxes[image, anchor],
            xywh=False, CIoU=True,
        ).squeeze(-1)
        return ((1.0 - ciou) / (2.0 * (1.0 - self.tau))).float()

    def classification_terms(self, assignment, box, dfl):
        regression_losses = self.regression_losses(assignment)
        cls, loc = alrp_loss(
            assignment.logits, assignment.labels(), regression_losses, delta=self.delta,
            group_ids=self.group_ids(assignment),
        )
        if assignment.logits.requires_grad and regression_losses.numel() > 0:
            self.record(cls.detach(), loc.detach())
        new_box = self.sb_weight * loc
        return new_box, cls, _rescaled(dfl, box, new_box)

    def record(self, cls_loss, loc_loss):
        """Adds one training step's component values (on their device: no host sync)."""
        self._cls_sum = self._cls_sum + cls_loss
        self._loc_sum = self._loc_sum + loc_loss
        self._recorded += 1

    def update(self):
        """The end of an epoch: SB from the steps recorded since the last update."""
        if self._recorded and float(self._loc_sum) > 0:
            # (mean loc + mean cls) / mean loc: the count cancels.
            self.sb_weight = float((self._loc_sum + self._cls_sum) / self._loc_sum)
        self._reset_records()


class RankingE2ELoss(E2ELoss):
    """``E2ELoss`` (the one-to-many and one-to-one branches of an end-to-end head) whose
    epoch-end ``update()`` also reaches its branches (aLRP's self-balancing weight)."""

    def update(self):
        super().update()
        for branch in (self.one2many, self.one2one):
            if hasattr(branch, "update"):
                branch.update()


RANKING_LOSSES = {
    "ap": APDetectionLoss,
    "rank_sort": RankSortDetectionLoss,
    "alrp": ALRPDetectionLoss,
}
