"""The torchvision RetinaNet integration, the example's synthetic data set and its mAP.

Skipped without torchvision (the [torchvision] extra); the mAP test also needs
torchmetrics and pycocotools (the example's evaluation).
"""

import math
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("torchvision")

import aploss_cuda.integrations.torchvision as integration  # noqa: E402
from aploss_cuda.integrations.torchvision import (  # noqa: E402
    ALRPLossHead,
    APLossClassificationHead,
    RankSortLossHead,
    foreground_boxes,
    matched_idxs_to_labels,
    rank_sort_targets,
    use_alrp_loss,
    use_ap_loss,
    use_rank_sort_loss,
)
from aploss_cuda.reference import (  # noqa: E402
    alrp_loss_reference,
    ap_loss_reference,
    rank_sort_loss_reference,
)
from torchvision.models.detection._utils import BoxCoder  # noqa: E402
from torchvision.models.detection.retinanet import (  # noqa: E402
    RetinaNetClassificationHead,
    RetinaNetHead,
)
from torchvision.ops import generalized_box_iou_loss  # noqa: E402

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


# A hand-made batch for the RS and aLRP heads: 2 images x 4 anchors, 3 classes, box coder
# weights (1, 1, 1, 1) as torchvision's RetinaNet. Each foreground anchor's predicted box
# (its regression output decoded at the anchor), IoU and GIoU loss with its matched box:
#   image 0, anchor 0: anchor (0, 0, 10, 10), dx = 0.5 -> (5, 0, 15, 10) vs box 0
#       (0, 0, 10, 10): IoU 50 / 150 = 1/3, enclosing box = union -> GIoU loss 2/3
#   image 0, anchor 3: anchor (0, 0, 20, 10), no offset, vs box 1 (0, 0, 10, 10):
#       IoU 100 / 200 = 1/2, GIoU loss 1/2
#   image 1, anchor 1: anchor (0, 0, 8, 8), dw = dh = log 2 -> (-4, -4, 12, 12) vs box 0
#       (0, 0, 8, 8): IoU 64 / 256 = 1/4, GIoU loss 3/4
#   image 1, anchor 2: anchor (0, 0, 8, 8), dx = 5 -> (40, 0, 48, 8) vs box 0: IoU 0,
#       union 128, enclosing (0, 0, 48, 8) of 384 -> GIoU -256/384, GIoU loss 5/3
# Image 0's anchor 1 and image 1's anchor 0 are background, image 0's anchor 2 and image
# 1's anchor 3 are between the thresholds.
HAND_IOUS = [1 / 3, 1 / 2, 1 / 4, 0.0]
HAND_GIOU_LOSSES = [2 / 3, 1 / 2, 3 / 4, 5 / 3]


def hand_batch():
    d = torch.float64
    targets = [
        {"boxes": torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=d), "labels": torch.tensor([2, 0])},
        {"boxes": torch.tensor([[0, 0, 8, 8]], dtype=d), "labels": torch.tensor([1])},
    ]
    anchors = [
        torch.tensor([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 10, 10], [0, 0, 20, 10]], dtype=d),
        torch.tensor([[20, 20, 40, 40], [0, 0, 8, 8], [0, 0, 8, 8], [0, 0, 8, 8]], dtype=d),
    ]
    matched = [torch.tensor([0, -1, -2, 1]), torch.tensor([-1, 0, 0, -2])]
    log2 = math.log(2)
    regression = torch.tensor(
        [
            [[0.5, 0, 0, 0], [0.3, 0.1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
            [[0, 0, 0, 0], [0, 0, log2, log2], [5, 0, 0, 0], [0, 0, 0, 0]],
        ],
        dtype=d,
        requires_grad=True,
    )
    logits = torch.randn(2, 4, 3, dtype=d, generator=torch.Generator().manual_seed(0))
    logits.requires_grad_(True)
    return targets, {"cls_logits": logits, "bbox_regression": regression}, anchors, matched


# The RS targets of hand_batch: the IoU in the matched class's column (0: a miss becomes a
# negative), -1 in the rows of the anchors between the thresholds.
HAND_RS_TARGETS = torch.tensor(
    [
        [[0, 0, 1 / 3], [0, 0, 0], [-1, -1, -1], [1 / 2, 0, 0]],
        [[0, 0, 0], [0, 1 / 4, 0], [0, 0, 0], [-1, -1, -1]],
    ],
    dtype=torch.float64,
)

# Its labels: 1 in the matched class's column (image 1's anchor 2 too).
HAND_LABELS = torch.tensor(
    [
        [[0, 0, 1], [0, 0, 0], [-1, -1, -1], [1, 0, 0]],
        [[0, 0, 0], [0, 1, 0], [0, 1, 0], [-1, -1, -1]],
    ],
    dtype=torch.int8,
)


def test_foreground_boxes_are_the_decoded_predictions_in_label_order():
    targets, outputs, anchors, matched = hand_batch()
    predicted, gt = foreground_boxes(
        targets, outputs["bbox_regression"], anchors, matched, BoxCoder((1.0,) * 4)
    )
    expected = torch.tensor(
        [[5, 0, 15, 10], [0, 0, 20, 10], [-4, -4, 12, 12], [40, 0, 48, 8]], dtype=torch.float64
    )
    assert torch.allclose(predicted, expected, atol=1e-12)
    expected_gt = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 8, 8], [0, 0, 8, 8]]
    assert torch.equal(gt, torch.tensor(expected_gt, dtype=torch.float64))
    assert predicted.requires_grad
    # rank_sort_targets writes them, in that order, over the positive entries of the labels.
    labels = torch.stack([matched_idxs_to_labels(m, t["labels"], 3) for t, m in zip(targets, matched)])
    assert torch.equal(labels, HAND_LABELS)
    rs_targets = rank_sort_targets(labels, torch.tensor(HAND_IOUS, dtype=torch.float64))
    assert rs_targets.dtype == torch.float64
    assert torch.allclose(rs_targets, HAND_RS_TARGETS, atol=1e-12)


def test_rank_sort_head_ranks_the_whole_batch_against_iou_targets(monkeypatch):
    targets, outputs, anchors, matched = hand_batch()
    head = RankSortLossHead(8, num_anchors=1, num_classes=3, delta=0.25)
    calls = []
    real = integration.rank_sort_loss

    def spy(scores, rs_targets, **kwargs):
        calls.append((scores, rs_targets, kwargs))
        return real(scores, rs_targets, **kwargs)

    monkeypatch.setattr(integration, "rank_sort_loss", spy)
    losses = head.compute_loss(targets, outputs, anchors, matched)
    assert set(losses) == {"classification", "bbox_regression"}

    # One call over every image x anchor x class, with the hand-computed IoU targets.
    [(scores, rs_targets, kwargs)] = calls
    assert scores is outputs["cls_logits"] and kwargs == {"delta": 0.25}
    assert not rs_targets.requires_grad  # the IoUs are detached
    assert torch.allclose(rs_targets, HAND_RS_TARGETS, atol=1e-12)

    logits = outputs["cls_logits"]
    expected_loss, _, _, expected_grad = rank_sort_loss_reference(logits.detach(), HAND_RS_TARGETS, 0.25)
    assert losses["classification"].item() == pytest.approx(float(expected_loss), abs=1e-9)
    losses["classification"].backward()
    assert torch.allclose(logits.grad, expected_grad, atol=1e-9)
    assert outputs["bbox_regression"].grad is None  # the targets carry no gradient


def test_rank_sort_box_loss_is_score_weighted_giou_balanced_to_the_rs_loss():
    targets, outputs, anchors, matched = hand_batch()
    head = RankSortLossHead(8, num_anchors=1, num_classes=3)
    losses = head.compute_loss(targets, outputs, anchors, matched)
    classification = losses["classification"].item()
    assert classification > 0
    # Balanced every iteration: the box loss has the RS loss's value.
    assert losses["bbox_regression"].item() == pytest.approx(classification, rel=1e-12)

    # Its gradient: that of sum_k w_k GIoU_k / sum_k w_k times RS / (that value), w_k the
    # highest class probability of foreground anchor k.
    losses["bbox_regression"].backward()
    logits = outputs["cls_logits"].detach()
    weights = torch.stack([logits[0, 0], logits[0, 3], logits[1, 1], logits[1, 2]]).sigmoid().amax(1)
    assert outputs["cls_logits"].grad is None  # the weights are detached
    regression = outputs["bbox_regression"].detach().requires_grad_(True)
    predicted, gt = foreground_boxes(targets, regression, anchors, matched, BoxCoder((1.0,) * 4))
    giou = generalized_box_iou_loss(predicted, gt, reduction="none")
    assert torch.allclose(giou.detach(), torch.tensor(HAND_GIOU_LOSSES, dtype=torch.float64), atol=1e-7)
    weighted = (weights * giou).sum() / weights.sum()
    (weighted * (classification / weighted.item())).backward()
    assert torch.allclose(outputs["bbox_regression"].grad, regression.grad, atol=1e-12)
    # Background and ignored anchors' regression outputs get nothing.
    assert torch.all(regression.grad[0, 1:3] == 0) and torch.all(regression.grad[1, [0, 3]] == 0)


def test_alrp_head_passes_halved_giou_losses_in_label_order(monkeypatch):
    targets, outputs, anchors, matched = hand_batch()
    head = ALRPLossHead(8, num_anchors=1, num_classes=3, sb_period=10, delta=0.5, sb_weight=7.0)
    calls = []
    real = integration.alrp_loss

    def spy(scores, labels, regression_losses, **kwargs):
        calls.append((scores, labels, regression_losses, kwargs))
        return real(scores, labels, regression_losses, **kwargs)

    monkeypatch.setattr(integration, "alrp_loss", spy)
    losses = head.compute_loss(targets, outputs, anchors, matched)
    assert set(losses) == {"classification", "bbox_regression"}

    [(scores, labels, regression_losses, kwargs)] = calls
    assert scores is outputs["cls_logits"] and kwargs == {"delta": 0.5}
    assert torch.equal(labels, HAND_LABELS)
    # GIoU loss / 2 / (1 - tau) with tau = 0.5: the GIoU losses themselves, image-major.
    expected = torch.tensor(HAND_GIOU_LOSSES, dtype=torch.float64)
    assert torch.allclose(regression_losses.detach(), expected, atol=1e-7)

    logits = outputs["cls_logits"]
    cls_ref, loc_ref, grad_ref = alrp_loss_reference(logits.detach(), labels, regression_losses.detach(), 0.5)
    assert losses["classification"].item() == pytest.approx(float(cls_ref), abs=1e-9)
    # The first call uses the initial SB (a period is 10 calls).
    assert losses["bbox_regression"].item() == pytest.approx(7.0 * float(loc_ref), abs=1e-9)
    losses["classification"].backward()
    assert torch.allclose(logits.grad, grad_ref, atol=1e-9)
    assert outputs["bbox_regression"].grad is None
    losses["bbox_regression"].backward()
    assert outputs["bbox_regression"].grad.abs().sum() > 0


def test_alrp_tau_scales_the_regression_losses(monkeypatch):
    seen = []
    monkeypatch.setattr(
        integration, "alrp_loss",
        lambda scores, labels, regression_losses, **kw: seen.append(regression_losses)
        or (scores.sum() * 0, regression_losses.sum() * 0),
    )
    head = ALRPLossHead(8, num_anchors=1, num_classes=3, sb_period=10, tau=0.0)
    head.compute_loss(*hand_batch())
    expected = torch.tensor(HAND_GIOU_LOSSES, dtype=torch.float64) / 2  # (1 - GIoU) / 2
    assert torch.allclose(seen[0].detach(), expected, atol=1e-7)


def test_alrp_head_self_balancing_weight_updates_every_sb_period_calls(monkeypatch):
    # (cls_loss, loc_loss) of successive calls, as alrp_loss would return them.
    values = iter([(0.9, 0.3), (0.8, 0.2), (0.7, 0.1), (0.6, 0.4), (0.2, 0.2), (0.5, 0.1), (0.4, 0.1),
                   (0.3, 0.1)])

    def fake_alrp_loss(scores, labels, regression_losses, **kwargs):
        cls, loc = next(values)
        return scores.sum() * 0 + cls, regression_losses.sum() * 0 + loc

    monkeypatch.setattr(integration, "alrp_loss", fake_alrp_loss)
    head = ALRPLossHead(8, num_anchors=1, num_classes=3, sb_period=3)
    assert head.sb_weight == 50.0  # the released initial value

    def box_loss(batch=None):
        return head.compute_loss(*(batch or hand_batch()))["bbox_regression"].item()

    assert box_loss() == pytest.approx(50 * 0.3)
    assert box_loss() == pytest.approx(50 * 0.2)
    # The third call ends the period: SB = (mean loc + mean cls) / mean loc
    # = (0.2 + 0.8) / 0.2 = 5, already applied to this call's loc_loss.
    assert box_loss() == pytest.approx(5 * 0.1)
    assert head.sb_weight == pytest.approx(5.0)
    assert box_loss() == pytest.approx(5 * 0.4)
    # Neither a batch without a foreground anchor nor an eval-mode call counts.
    targets, outputs, anchors, _ = hand_batch()
    no_foreground = [torch.full((4,), -1), torch.full((4,), -2)]
    assert box_loss((targets, outputs, anchors, no_foreground)) == pytest.approx(5 * 0.2)
    head.eval()
    assert box_loss() == pytest.approx(5 * 0.1)
    head.train()
    assert box_loss() == pytest.approx(5 * 0.1)
    assert head.sb_weight == pytest.approx(5.0)
    # This period recorded (0.6, 0.4), (0.4, 0.1), (0.3, 0.1):
    # SB = (0.6 / 3 + 1.3 / 3) / (0.6 / 3) = 19 / 6.
    assert box_loss() == pytest.approx(19 / 6 * 0.1)
    assert head.sb_weight == pytest.approx(19 / 6)


@pytest.mark.parametrize("loss", ["rs", "alrp"])
def test_one_training_step_with_ranking_heads_changes_both_branches(loss):
    torch.manual_seed(0)
    model = small_retinanet(num_classes=len(shapes.CLASSES), loss=loss)
    model.train()
    images, targets = shapes.make_split("train", 2, seed=0)
    images = [im.float() / 255 for im in images]
    head = model.head
    before = {k: v.clone() for k, v in head.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    total = losses["classification"] + losses["bbox_regression"]
    assert torch.isfinite(total) and losses["classification"].item() > 0
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    after = head.state_dict()
    for key in ("classification_head.cls_logits.weight", "regression_head.bbox_reg.weight"):
        assert not torch.equal(before[key], after[key]), key


@pytest.mark.parametrize(
    "use, head_type, kwargs",
    [(use_rank_sort_loss, RankSortLossHead, {"delta": 0.25}),
     (use_alrp_loss, ALRPLossHead, {"sb_period": 5, "delta": 2.0})],
)
def test_use_ranking_losses_keep_the_branches_and_only_change_the_losses(use, head_type, kwargs):
    torch.manual_seed(0)
    model = small_retinanet(num_classes=3, loss="focal").eval()
    old_head = model.head
    before = {k: v.clone() for k, v in old_head.state_dict().items()}
    images = [torch.rand(3, 128, 128)]
    with torch.no_grad():
        detections_before = model(images)[0]

    assert use(model, **kwargs) is model
    new_head = model.head
    assert isinstance(new_head, head_type) and isinstance(new_head, RetinaNetHead)
    assert new_head.delta == kwargs["delta"]
    assert new_head.classification_head is old_head.classification_head
    assert new_head.regression_head is old_head.regression_head
    assert new_head.box_coder is model.box_coder  # decodes as inference does
    after = new_head.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        detections_after = model(images)[0]
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(detections_before[key], detections_after[key])

    # Switching to AP-loss afterwards restores per-branch losses (the RS / aLRP head would
    # never call the AP-loss branch).
    use_ap_loss(model)
    assert type(model.head) is RetinaNetHead
    assert isinstance(model.head.classification_head, APLossClassificationHead)
    assert model.head.regression_head is old_head.regression_head


def test_alrp_sb_period_is_required_and_positive():
    model = small_retinanet(num_classes=3, loss="focal")
    with pytest.raises(TypeError, match="sb_period"):
        use_alrp_loss(model)
    with pytest.raises(ValueError, match="sb_period"):
        use_alrp_loss(model, sb_period=0)


@pytest.mark.parametrize(
    "use, kwargs", [(use_rank_sort_loss, {}), (use_alrp_loss, {"sb_period": 1})]
)
def test_use_ranking_losses_reject_other_models(use, kwargs):
    with pytest.raises(TypeError, match="RetinaNet"):
        use(torch.nn.Linear(2, 2), **kwargs)


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
    import importlib.util

    import numpy as np

    # By path: benchmarks/ has a plots module too, and the suite may have imported it first.
    spec = importlib.util.spec_from_file_location("examples_plots", os.path.join(EXAMPLES, "plots.py"))
    plots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plots)
    its, means = plots.smoothed(np.arange(150.0), window=50)
    assert len(its) == len(means) == 150 and its[0] == 1 and its[-1] == 150
    assert means[0] == 0.0 and means[-1] == np.mean(np.arange(100.0, 150.0))
