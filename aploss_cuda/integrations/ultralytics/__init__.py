"""Ranking-based losses in Ultralytics YOLO: AP-loss, Rank & Sort loss, aLRP loss.

    from ultralytics import YOLO
    from aploss_cuda.integrations.ultralytics import RankSortTrainer   # or APLossTrainer, ALRPTrainer

    YOLO("yolov8n.yaml").train(trainer=RankSortTrainer, data="data.yaml", epochs=100)

The trainers build a ``RankingDetectionModel``, whose criterion is YOLO's
``v8DetectionLoss`` with the BCE classification term replaced by one ranking-loss call
over every anchor x class of the batch (``losses.py``: how the box and DFL terms are
balanced, aLRP's self-balancing weight, what a foreground anchor with target 0 becomes);
end-to-end heads (YOLOv10, YOLO26) get the loss in both branches. Mixed precision works:
the ranking losses run on float32 copies of float16 logits (``assignment.float32_logits``).

Ultralytics is AGPL-3.0; this integration copies none of its code and imports it only
when this module is imported (``pip install 'aploss_cuda[ultralytics]'``). Checkpoints of
these models name these classes: loading them needs aploss_cuda installed.
"""

try:
    import ultralytics  # noqa: F401
except ImportError as error:
    raise ImportError(
        "aploss_cuda.integrations.ultralytics needs ultralytics (the [ultralytics] extra: "
        "pip install --no-build-isolation '.[ultralytics]')"
    ) from error

from .assignment import Assignment
from .losses import (
    RANKING_LOSSES,
    ALRPDetectionLoss,
    APDetectionLoss,
    RankingDetectionLoss,
    RankingE2ELoss,
    RankSortDetectionLoss,
)
from .trainers import (
    ALRPTrainer,
    APLossTrainer,
    RankingDetectionModel,
    RankingLossTrainer,
    RankSortTrainer,
)

__all__ = [
    "ALRPDetectionLoss",
    "ALRPTrainer",
    "APDetectionLoss",
    "APLossTrainer",
    "Assignment",
    "RANKING_LOSSES",
    "RankSortDetectionLoss",
    "RankSortTrainer",
    "RankingDetectionLoss",
    "RankingDetectionModel",
    "RankingE2ELoss",
    "RankingLossTrainer",
]
