"""The model and trainer classes that put a ranking loss into ``YOLO(...).train``.

Ultralytics' documented way to change the loss: a ``DetectionModel`` whose
``init_criterion`` builds it, and a ``DetectionTrainer`` whose ``get_model`` builds that
model. Multi-GPU training re-creates the trainer in fresh processes from a pickle of its
class, the model and the callbacks, so everything here is a module-level class (pickled
by reference) and the loss and its options live on the model instance.
"""

import functools
import inspect

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import RANK
from ultralytics.utils.loss import E2ELoss

from .losses import RANKING_LOSSES, RankingE2ELoss


def _check_loss(ranking_loss, loss_options):
    """The loss class for ``ranking_loss``; a TypeError for an unknown name or option."""
    if ranking_loss not in RANKING_LOSSES:
        raise ValueError(f"ranking_loss must be one of {sorted(RANKING_LOSSES)}, got {ranking_loss!r}")
    loss_class = RANKING_LOSSES[ranking_loss]
    accepted = {
        name for name, p in inspect.signature(loss_class.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = set(loss_options) - accepted
    if unknown:
        raise TypeError(
            f"{loss_class.__name__} does not take {sorted(unknown)}; its options: {sorted(accepted)}"
        )
    return loss_class


class RankingDetectionModel(DetectionModel):
    """A YOLO ``DetectionModel`` trained with a ranking-based classification loss.

    Args:
        cfg, ch, nc, verbose: as ``DetectionModel`` (a model yaml, e.g. "yolov8n.yaml").
        ranking_loss: "rank_sort", "ap" or "alrp" (``losses.RANKING_LOSSES``).
        loss_options: keyword options of that loss (``delta``, ``per_image``; aLRP also
            ``sb_weight``, ``tau``).

    The criterion is the ranking loss, or for an end-to-end head (YOLOv10, YOLO26) a
    ``RankingE2ELoss`` of two of them, one per branch, whichever ``DetectionModel`` itself
    would build with YOLO's loss.
    """

    def __init__(self, cfg="yolov8n.yaml", ch=3, nc=None, verbose=True, *,
                 ranking_loss="rank_sort", loss_options=None):
        loss_options = dict(loss_options or {})
        _check_loss(ranking_loss, loss_options)
        super().__init__(cfg, ch=ch, nc=nc, verbose=verbose)
        self.ranking_loss = ranking_loss
        self.loss_options = loss_options

    def init_criterion(self):
        build = functools.partial(_check_loss(self.ranking_loss, self.loss_options), **self.loss_options)
        if isinstance(super().init_criterion(), E2ELoss):  # YOLO's own choice of head loss
            return RankingE2ELoss(self, build)
        return build(self)


class RankingLossTrainer(DetectionTrainer):
    """A ``DetectionTrainer`` whose model is a ``RankingDetectionModel``.

    Subclasses set ``ranking_loss`` and ``loss_options`` as class attributes; to change an
    option, subclass again (at module level, so that multi-GPU training can import it):

        class PerImageRankSortTrainer(RankSortTrainer):
            loss_options = {**RankSortTrainer.loss_options, "per_image": True}
    """

    ranking_loss = None
    loss_options = {}

    def get_model(self, cfg=None, weights=None, verbose=True):
        if self.ranking_loss is None:
            raise TypeError(
                f"{type(self).__name__} names no ranking_loss: use RankSortTrainer, APLossTrainer, "
                "ALRPTrainer or a subclass that sets it"
            )
        model = RankingDetectionModel(
            cfg, ch=self.data["channels"], nc=self.data["nc"], verbose=verbose and RANK == -1,
            ranking_loss=self.ranking_loss, loss_options=self.loss_options,
        )
        model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        return model


class RankSortTrainer(RankingLossTrainer):
    """Rank & Sort loss (delta 0.5, the paper's) on the assigner's soft targets."""

    ranking_loss = "rank_sort"
    loss_options = {"delta": 0.5}


class APLossTrainer(RankingLossTrainer):
    """AP-loss (delta 1, the paper's); YOLO's box and DFL terms."""

    ranking_loss = "ap"
    loss_options = {"delta": 1.0}


class ALRPTrainer(RankingLossTrainer):
    """aLRP loss (delta 1, SB from 50, tau 0.5: the released settings)."""

    ranking_loss = "alrp"
    loss_options = {"delta": 1.0, "sb_weight": 50.0, "tau": 0.5}
