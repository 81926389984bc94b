"""COCO-style detection metrics of a model on a split, through torchmetrics.

``MeanAveragePrecision`` (pycocotools backend) gives pycocotools' numbers: 101-point
interpolated AP per class, averaged over the classes that have ground truth, greedy
matching by score, IoU thresholds 0.50:0.05:0.95, at most 100 detections per image.
"""

import torch
from torchmetrics.detection import MeanAveragePrecision


@torch.no_grad()
def predict(model, images, batch_size=32):
    """The model's detections for uint8 images (n, 3, h, w); restores the training mode."""
    was_training = model.training
    model.eval()
    detections = []
    for start in range(0, len(images), batch_size):
        batch = [im.float() / 255 for im in images[start : start + batch_size]]
        detections.extend(model(batch))
    model.train(was_training)
    return detections


def coco_map(detections, targets):
    """{"map": mAP@[.5:.95], "map_50": mAP@.5} of detections against targets."""
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    metric.update(
        [{k: d[k] for k in ("boxes", "scores", "labels")} for d in detections],
        [{k: t[k] for k in ("boxes", "labels")} for t in targets],
    )
    result = metric.compute()
    return {"map": float(result["map"]), "map_50": float(result["map_50"])}


def evaluate(model, images, targets, batch_size=32):
    return coco_map(predict(model, images, batch_size), targets)
