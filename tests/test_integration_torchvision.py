"""The torchvision RetinaNet integration, the example's synthetic data set and its mAP.

Skipped without torchvision (the [torchvision] extra); the mAP test also needs
torchmetrics and pycocotools (the example's evaluation).
"""

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("torchvision")

from aploss_cuda.integrations.torchvision import (  # noqa: E402
    APLossClassificationHead,
    matched_idxs_to_labels,
    use_ap_loss,
)
from aploss_cuda.reference import ap_loss_reference  # noqa: E402
from torchvision.models.detection.retinanet import RetinaNetClassificationHead  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)

import shapes  # noqa: E402
from model import small_retinanet  # noqa: E402


def test_labels_from_matcher_results():
    # anchors: matched to box 0 (class 2), background, between thresholds, box 1 (class 0),
    # box 0 again
    matched = torch.tensor([0, -1, -2, 1, 0])
    gt_labels = torch.tensor([2, 0])
    labels = matched_idxs_to_labels(matched, gt_labels, num_classes=3)
    expected = torch.tensor(
        [[0, 0, 1], [0, 0, 0], [-1, -1, -1], [1, 0, 0], [0, 0, 1]], dtype=torch.int8
    )
    assert labels.dtype == torch.int8
    assert torch.equal(labels, expected)


def test_labels_of_an_image_without_boxes_are_all_negative():
    # RetinaNet.compute_loss gives -1 (background) to every anchor of an empty image.
    labels = matched_idxs_to_labels(
        torch.full((4,), -1), torch.empty(0, dtype=torch.int64), num_classes=2
    )
    assert torch.equal(labels, torch.zeros(4, 2, dtype=torch.int8))


def test_head_loss_is_one_ranking_over_the_whole_batch():
    torch.manual_seed(0)
    head = APLossClassificationHead(8, num_anchors=2, num_classes=3, delta=0.5)
    logits = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    targets = [{"labels": torch.tensor([1])}, {"labels": torch.tensor([0, 2])}]
    matched = [torch.tensor([0, -1, -2, -1, 0, -1]), torch.tensor([-1, 1, 0, -2, -1, -1])]
    loss = head.compute_loss(targets, {"cls_logits": logits}, matched)

    labels = torch.stack(
        [matched_idxs_to_labels(m, t["labels"], 3) for t, m in zip(targets, matched)]
    )
    expected_loss, expected_grad = ap_loss_reference(logits.detach(), labels, 0.5, True)
    assert loss.item() == pytest.approx(float(expected_loss), abs=1e-9)
    # Not the mean of per-image rankings: the two images' entries compete with each other.
    per_image = [float(ap_loss_reference(logits.detach()[i], labels[i], 0.5, True)[0]) for i in range(2)]
    assert loss.item() != pytest.approx(sum(per_image) / 2, abs=1e-6)

    loss.backward()  # the error-driven gradient of that one ranking
    assert torch.allclose(logits.grad, expected_grad, atol=1e-12)
    assert torch.all(logits.grad[labels == -1] == 0)


def test_use_ap_loss_keeps_the_weights_and_only_changes_the_loss():
    torch.manual_seed(0)
    model = small_retinanet(num_classes=3, loss="focal").eval()
    old_head = model.head.classification_head
    before = {k: v.clone() for k, v in old_head.state_dict().items()}
    images = [torch.rand(3, 128, 128)]
    with torch.no_grad():
        detections_before = model(images)[0]

    assert use_ap_loss(model, delta=2.0, interpolate=False) is model
    new_head = model.head.classification_head
    assert isinstance(new_head, APLossClassificationHead)
    assert isinstance(new_head, RetinaNetClassificationHead)
    assert new_head.delta == 2.0 and new_head.ap_loss_kwargs == {"interpolate": False}
    after = new_head.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # The same modules (GroupNorm towers included), so inference is unchanged.
    assert new_head.conv is old_head.conv and new_head.cls_logits is old_head.cls_logits
    with torch.no_grad():
        detections_after = model(images)[0]
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(detections_before[key], detections_after[key])


def test_use_ap_loss_rejects_other_models():
    with pytest.raises(TypeError, match="RetinaNet"):
        use_ap_loss(torch.nn.Linear(2, 2))


def test_retinanet_with_ap_loss_trains_on_a_repeated_batch():
    torch.manual_seed(0)
    model = small_retinanet(num_classes=len(shapes.CLASSES), loss="ap")
    model.train()
    images, targets = shapes.make_split("train", 4, seed=0)
    images = [im.float() / 255 for im in images]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    history = []
    for _ in range(12):
        losses = model(images, targets)
        total = losses["classification"] + losses["bbox_regression"]
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(losses["classification"].item())
    assert 0.9 < history[0] <= 1.0  # 1 - AP of a random ranking of a few positives
    assert history[-1] < 0.8 * history[0], history


def test_without_torchvision_the_integration_names_the_extra(tmp_path):
    # A fresh interpreter in which torchvision cannot be imported, importing the same
    # aploss_cuda as this process (run from an empty directory, so not a checkout's copy).
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "import aploss_cuda.integrations\n"
        "try:\n"
        "    import aploss_cuda.integrations.torchvision\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    import aploss_cuda

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(aploss_cuda.__file__)))
    env = {**os.environ, "PYTHONPATH": package_parent}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "[torchvision]" in result.stdout


def test_synthetic_data_set_is_deterministic():
    torch.manual_seed(123)  # the global RNGs must not matter
    images, targets = shapes.make_split("train", 4, seed=7)
    torch.manual_seed(456)
    again, again_targets = shapes.make_split("train", 4, seed=7)
    assert torch.equal(images, again)
    for t, u in zip(targets, again_targets):
        assert torch.equal(t["boxes"], u["boxes"]) and torch.equal(t["labels"], u["labels"])

    # An image depends only on (seed, split, index), not on how many are generated.
    single, single_target = shapes.make_image(7, "train", 3)
    assert torch.equal(single, images[3]) and torch.equal(single_target["boxes"], targets[3]["boxes"])
    # Splits and seeds give different images.
    assert not torch.equal(shapes.make_image(7, "test", 3)[0], single)
    assert not torch.equal(shapes.make_image(8, "train", 3)[0], single)

    assert images.shape == (4, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    assert images.dtype == torch.uint8
    for t in targets:
        boxes = t["boxes"]
        assert 1 <= len(boxes) <= shapes.MAX_OBJECTS
        assert torch.all(boxes[:, 2:] > boxes[:, :2])
        assert torch.all((boxes >= 0) & (boxes <= shapes.IMAGE_SIZE))
        assert torch.all((t["labels"] >= 0) & (t["labels"] < len(shapes.CLASSES)))


def test_coco_map_perfect_and_a_hand_computed_case():
    pytest.importorskip("torchmetrics")
    pytest.importorskip("pycocotools")
    import evaluate

    box_a, box_b = [10.0, 10.0, 40.0, 40.0], [60.0, 60.0, 90.0, 100.0]
    targets = [{"boxes": torch.tensor([box_a, box_b]), "labels": torch.tensor([0, 1])}]
    perfect = [
        {"boxes": torch.tensor([box_a, box_b]), "scores": torch.tensor([0.9, 0.8]),
         "labels": torch.tensor([0, 1])}
    ]
    assert evaluate.coco_map(perfect, targets) == pytest.approx({"map": 1.0, "map_50": 1.0})

    # One class, two ground-truth boxes; a false positive ranked above the one true
    # positive: precision 1/2 up to recall 1/2, nothing beyond. 101-point interpolation:
    # recall thresholds 0, 0.01, ..., 0.50 (51 of them) get precision 0.5 -> AP = 25.5/101.
    targets = [{"boxes": torch.tensor([box_a, box_b]), "labels": torch.tensor([0, 0])}]
    detections = [
        {"boxes": torch.tensor([[100.0, 0.0, 120.0, 20.0], box_a]),
         "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}
    ]
    expected = 51 * 0.5 / 101
    assert evaluate.coco_map(detections, targets) == pytest.approx(
        {"map": expected, "map_50": expected}, abs=1e-6
    )


def test_smoothed_curves_cover_every_iteration():
    pytest.importorskip("matplotlib")
    import numpy as np
    import plots

    its, means = plots.smoothed(np.arange(150.0), window=50)
    assert len(its) == len(means) == 150 and its[0] == 1 and its[-1] == 150
    assert means[0] == 0.0 and means[-1] == np.mean(np.arange(100.0, 150.0))
