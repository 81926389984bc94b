"""The Ultralytics YOLO integration: the losses against direct aploss_cuda calls on YOLO's
own assignment, training through ``YOLO(...).train(trainer=...)``, pickling, float16.

Skipped without ultralytics (the [ultralytics] extra; ``make test`` installs it), except
the two import checks, which need no ultralytics. Everything runs offline on the CPU.
"""

import copy
import importlib.util
import math
import os
import pickle
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network

import aploss_cuda  # noqa: E402

HAVE_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None
needs_ultralytics = pytest.mark.skipif(
    not HAVE_ULTRALYTICS,
    reason="ultralytics is not installed (pip install 'aploss_cuda[ultralytics]'; make test installs it)",
)

EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "ultralytics"
)
sys.path.insert(0, EXAMPLE)

import yolo_data  # noqa: E402

if HAVE_ULTRALYTICS:
    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.loss import v8DetectionLoss
    from ultralytics.utils.metrics import bbox_iou

    from aploss_cuda.integrations.ultralytics import (
        ALRPDetectionLoss,
        ALRPTrainer,
        APDetectionLoss,
        APLossTrainer,
        Assignment,
        RankingDetectionModel,
        RankingE2ELoss,
        RankingLossTrainer,
        RankSortDetectionLoss,
        RankSortTrainer,
    )

    class PerImageRankSortTrainer(RankSortTrainer):
        """A user's option change: a module-level subclass."""

        loss_options = {**RankSortTrainer.loss_options, "per_image": True}


TRAINERS = ["RankSortTrainer", "APLossTrainer", "ALRPTrainer"]
END_TO_END_CFG = "yolo26n.yaml"  # an end-to-end head (one-to-many and one-to-one branches)
IMAGE_SIZE = 64
BATCH = 2


def _subprocess_code(code, tmp_path):
    """Runs ``code`` in a fresh interpreter importing this process's aploss_cuda."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(aploss_cuda.__file__)))
    env = {**os.environ, "PYTHONPATH": package_parent}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_aploss_cuda_does_not_import_ultralytics(tmp_path):
    code = (
        "import sys, aploss_cuda, aploss_cuda.integrations\n"
        "print('ultralytics' in sys.modules)\n"
    )
    assert _subprocess_code(code, tmp_path).strip() == "False"


def test_without_ultralytics_the_integration_names_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['ultralytics'] = None\n"
        "try:\n"
        "    import aploss_cuda.integrations.ultralytics\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    assert "[ultralytics]" in _subprocess_code(code, tmp_path)


# ------------------------------------------------------------------ fixed tensors


def fixed_model(cfg="yolov8n.yaml", ranking_loss="ap", **loss_options):
    torch.manual_seed(0)
    model = RankingDetectionModel(
        cfg, nc=3, verbose=False, ranking_loss=ranking_loss, loss_options=loss_options
    )
    model.args = get_cfg()  # the hyperparameters (box, cls, dfl gains) the trainer attaches
    return model.train()


def fixed_batch():
    """Two 64 px images' ground truth: normalised xywh boxes, their classes and images."""
    return {
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[0.0], [2.0], [1.0]]),
        "bboxes": torch.tensor(
            [[0.3, 0.3, 0.4, 0.5], [0.7, 0.65, 0.5, 0.4], [0.5, 0.5, 0.6, 0.6]]
        ),
    }


def fixed_preds(model, dtype=torch.float32):
    """The head's training outputs on fixed images, as leaves (scores and boxes) that
    collect their own gradients."""
    torch.manual_seed(1)
    with torch.no_grad():
        preds = model(torch.rand(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE))
    return {
        "boxes": preds["boxes"].to(dtype).requires_grad_(True),
        "scores": preds["scores"].to(dtype).requires_grad_(True),
        "feats": preds["feats"],
    }


def clone_preds(preds):
    return {
        "boxes": preds["boxes"].detach().clone().requires_grad_(True),
        "scores": preds["scores"].detach().clone().requires_grad_(True),
        "feats": preds["feats"],
    }


def yolo_run(model, preds, batch):
    """YOLO's own v8DetectionLoss on ``preds``: its gain-weighted (box, cls, dfl) terms, the
    assigner's outputs and the box loss's arguments, seen by spies of this test."""
    plain = v8DetectionLoss(model)
    seen = {}
    assigner, box_loss = plain.assigner, plain.bbox_loss

    def spy_assigner(*args, **kwargs):
        seen["assigned"] = assigner(*args, **kwargs)
        return seen["assigned"]

    def spy_box_loss(*args):
        seen["box_args"] = args
        return box_loss(*args)

    plain.assigner, plain.bbox_loss = spy_assigner, spy_box_loss
    _, terms, _ = plain.get_assigned_targets_and_loss(preds, batch)
    return terms, seen


def labels_of(seen, shape):
    """1 at each foreground anchor's assigned class, by a loop over the foreground."""
    target_labels, _, _, fg_mask, _ = seen["assigned"]
    labels = torch.zeros(shape, dtype=torch.int8)
    for image, anchor in fg_mask.nonzero().tolist():
        labels[image, anchor, target_labels[image, anchor]] = 1
    return labels


def direct_terms(name, preds, terms, seen, **options):
    """The (box, cls, dfl) that the integration should give, from direct aploss_cuda calls
    on YOLO's assignment and YOLO's own box and DFL terms."""
    box, dfl = terms[0], terms[2]
    logits = preds["scores"].permute(0, 2, 1)
    labels = labels_of(seen, logits.shape)
    group_ids = torch.arange(BATCH)[:, None, None] if options.get("per_image") else None
    if name == "ap":
        cls = aploss_cuda.ap_loss(logits, labels, delta=1.0, group_ids=group_ids)
        return box, cls, dfl
    if name == "rank_sort":
        targets = seen["assigned"][2].float()  # the soft targets, zeros included
        cls = aploss_cuda.rank_sort_loss(logits, targets, delta=0.5, group_ids=group_ids)
        scale = cls.detach() / (box + dfl).detach()
        return box * scale, cls, dfl * scale
    # aLRP: 1 - CIoU of each foreground anchor, image-major, as its regression loss
    _, pred_bboxes, _, target_bboxes, _, _, fg_mask, _, _ = seen["box_args"]
    ciou = bbox_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, CIoU=True).squeeze(-1)
    cls, loc = aploss_cuda.alrp_loss(logits, labels, 1.0 - ciou, delta=1.0, group_ids=group_ids)
    new_box = 50.0 * loc
    return new_box, cls, dfl * (new_box.detach() / box.detach())


@needs_ultralytics
@pytest.mark.parametrize("name", ["ap", "rank_sort", "alrp"])
@pytest.mark.parametrize("per_image", [False, True])
def test_loss_equals_direct_calls_on_yolos_assignment(name, per_image):
    model = fixed_model(ranking_loss=name, per_image=per_image)
    batch, preds = fixed_batch(), fixed_preds(model)
    criterion = model.init_criterion()
    assert type(criterion) is {"ap": APDetectionLoss, "rank_sort": RankSortDetectionLoss,
                               "alrp": ALRPDetectionLoss}[name]

    ours = clone_preds(preds)
    loss, items = criterion(ours, batch)
    assert set(items) == {"box_loss", "cls_loss", "dfl_loss"}

    theirs = clone_preds(preds)
    terms, seen = yolo_run(model, theirs, batch)
    fg_mask, target_scores = seen["assigned"][3], seen["assigned"][2]
    assert 0 < int(fg_mask.sum()) < fg_mask.numel()
    assert float(target_scores.max()) > 0  # Rank & Sort has positives
    expected = torch.stack([t.float() for t in direct_terms(name, theirs, terms, seen,
                                                            per_image=per_image)])

    # YOLO's loss() returns the terms times the batch size.
    assert torch.allclose(loss, expected * BATCH, rtol=1e-5, atol=1e-7), (loss, expected * BATCH)
    assert expected[1] > 0
    loss.sum().backward()
    (expected.sum() * BATCH).backward()
    for key in ("scores", "boxes"):
        assert ours[key].grad.abs().sum() > 0, key
        assert torch.allclose(ours[key].grad, theirs[key].grad, rtol=1e-4, atol=1e-7), key


@needs_ultralytics
def test_one_ranking_over_the_batch_is_not_the_per_image_mean():
    batch = fixed_batch()
    losses = {}
    for per_image in (False, True):
        model = fixed_model(ranking_loss="ap", per_image=per_image)
        losses[per_image] = model.init_criterion()(fixed_preds(model), batch)[1]["cls_loss"]
    assert float(losses[False]) != pytest.approx(float(losses[True]), abs=1e-6)


def hand_assignment(target_scores):
    """A hand-made assignment of 1 image x 3 anchors x 2 classes."""
    logits = torch.tensor([[[2.0, -1.0], [0.5, 2.5], [-0.5, 1.5]]], requires_grad=True)
    fg_mask = torch.tensor([[True, True, False]])
    target_labels = torch.tensor([[0, 1, 0]])
    boxes = torch.zeros(1, 3, 4)
    return Assignment(logits, torch.tensor([target_scores]), fg_mask, target_labels, boxes, boxes)


@needs_ultralytics
def test_a_foreground_anchor_whose_target_is_zero_is_a_rank_sort_negative():
    # Anchor 1 is foreground (class 1) but its soft target underflowed to 0.
    assignment = hand_assignment([[0.8, 0.0], [0.0, 0.0], [0.0, 0.0]])
    targets = assignment.rank_sort_targets()
    assert torch.equal(targets, assignment.target_scores)  # a negative, not -1 (ignored)
    # AP-loss and aLRP still count it as a positive of its assigned class.
    expected_labels = torch.tensor([[[1, 0], [0, 1], [0, 0]]], dtype=torch.int8)
    assert torch.equal(assignment.labels(), expected_labels)

    rs = aploss_cuda.rank_sort_loss(assignment.logits, targets)
    ignored = aploss_cuda.rank_sort_loss(
        assignment.logits, torch.tensor([[[0.8, 0.0], [-1.0, -1.0], [0.0, 0.0]]])
    )
    assert rs.item() > 0 and ignored.item() == 0  # the choice matters: it outranks the positive
    rs.backward()
    assert assignment.logits.grad[0, 1, 1] > 0  # pushed down, as a negative


@needs_ultralytics
def test_targets_above_one_by_rounding_are_clamped():
    assignment = hand_assignment([[1.0000001, 0.0], [0.0, 0.3], [0.0, 0.0]])
    assert float(assignment.rank_sort_targets().max()) == 1.0


@needs_ultralytics
def test_alrp_self_balancing_weight_updates_at_each_epoch_end(monkeypatch):
    import aploss_cuda.integrations.ultralytics.losses as losses

    values = iter([(0.9, 0.3), (0.8, 0.2), (0.7, 0.1), (0.6, 0.4)])

    def fake_alrp_loss(scores, labels, regression_losses, **kwargs):
        cls, loc = next(values)
        return scores.sum() * 0 + cls, regression_losses.sum() * 0 + loc

    monkeypatch.setattr(losses, "alrp_loss", fake_alrp_loss)
    model = fixed_model(ranking_loss="alrp")
    criterion = model.init_criterion()
    batch, preds = fixed_batch(), fixed_preds(model)
    assert criterion.sb_weight == 50.0  # the released initial value

    def box_term(grad=True):
        p = clone_preds(preds)
        if not grad:
            with torch.no_grad():
                return float(criterion(p, batch)[1]["box_loss"])
        return float(criterion(p, batch)[1]["box_loss"])

    assert box_term() == pytest.approx(50 * 0.3)
    assert box_term() == pytest.approx(50 * 0.2)
    assert box_term(grad=False) == pytest.approx(50 * 0.1)  # validation: not recorded
    criterion.update()  # epoch end: (mean loc + mean cls) / mean loc = (0.25 + 0.85) / 0.25
    assert criterion.sb_weight == pytest.approx(1.1 / 0.25)
    assert box_term() == pytest.approx(1.1 / 0.25 * 0.4)
    criterion.update()
    assert criterion.sb_weight == pytest.approx((0.4 + 0.6) / 0.4)
    criterion.update()  # an epoch with nothing recorded keeps SB
    assert criterion.sb_weight == pytest.approx((0.4 + 0.6) / 0.4)


@needs_ultralytics
@pytest.mark.parametrize("cfg", [END_TO_END_CFG, "yolov10n.yaml"])
def test_end_to_end_heads_get_the_loss_in_both_branches(cfg):
    model = fixed_model(cfg, ranking_loss="alrp", delta=2.0)
    criterion = model.init_criterion()
    assert isinstance(criterion, RankingE2ELoss)
    for branch in (criterion.one2many, criterion.one2one):
        assert type(branch) is ALRPDetectionLoss and branch.delta == 2.0
    assert criterion.one2many.assigner.topk == 10  # YOLO's per-branch assignment
    assert (criterion.one2one.assigner.topk, criterion.one2one.assigner.topk2) == (7, 1)

    # update() at an epoch's end reaches the branches' self-balancing weights.
    criterion.one2one.record(torch.tensor(0.6), torch.tensor(0.2))
    o2m_before = criterion.o2m
    criterion.update()
    assert criterion.one2one.sb_weight == pytest.approx(4.0)
    assert criterion.one2many.sb_weight == 50.0  # nothing recorded there
    assert criterion.o2m < o2m_before  # E2ELoss's own decay still runs


def yolo_scale_preds(dtype, num_classes=80):
    """Head outputs of 640 px images (8,400 anchors), made up, not from a forward pass:
    the loss reads only the feature maps' shapes."""
    def normal(seed, *shape):
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))

    return {
        "boxes": (normal(1, BATCH, 64, 8400) * 0.1).to(dtype).requires_grad_(True),
        "scores": (normal(2, BATCH, num_classes, 8400) - 4).to(dtype).requires_grad_(True),
        "feats": [torch.zeros(BATCH, 1, side, side, dtype=dtype) for side in (80, 40, 20)],
    }


@needs_ultralytics
def test_float16_logits_with_a_gradient_scaler():
    torch.manual_seed(0)
    model = RankingDetectionModel("yolov8n.yaml", nc=80, verbose=False, ranking_loss="rank_sort")
    model.args = get_cfg()
    batch, criterion = fixed_batch(), model.init_criterion()
    scale = 2.0**16  # torch.amp.GradScaler's initial scale
    half = yolo_scale_preds(torch.float16)
    loss, _ = criterion(half, batch)
    (loss.sum() * scale).backward()
    grad = half["scores"].grad
    assert grad.dtype == torch.float16 and torch.isfinite(grad).all()

    full = yolo_scale_preds(torch.float32)
    for key in ("scores", "boxes"):  # the same values
        full[key].data.copy_(half[key].detach().float())
    reference, _ = criterion(full, batch)
    (reference.sum() * scale).backward()
    expected = full["scores"].grad
    # Unscaled, many of these per-entry gradients would be below float16's range ...
    small = (expected != 0) & (expected.abs() / scale < 2.0**-25)
    assert small.sum() > 10_000
    # ... scaled, every one survives the rounding to float16.
    assert (grad[small] != 0).all()
    # (The assignment, from float16 sigmoids, and the box terms differ a little.)
    assert torch.allclose(grad.float(), expected, rtol=0.05, atol=0.02 * float(expected.abs().max()))

    # Why the integration casts the logits to float32: a float16 loss would receive the
    # scaled grad_output in float16, which overflows (scale x batch size > 65504).
    logits = half["scores"].detach().permute(0, 2, 1).requires_grad_(True)
    targets = torch.zeros(logits.shape)
    targets[:, :4, 0] = 0.5
    direct = aploss_cuda.rank_sort_loss(logits, targets)
    (direct.float() * scale * BATCH).backward()
    assert not torch.isfinite(logits.grad).all()


@needs_ultralytics
def test_a_loss_whose_collaborators_were_not_called_raises():
    # If an Ultralytics release stopped calling assigner / bce / bbox_loss, the loss must
    # not train on stale or missing inputs.
    criterion = fixed_model(ranking_loss="ap").init_criterion()
    with pytest.raises(RuntimeError, match="classification term was not computed"):
        criterion._take_assignment()
    criterion.bce(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    with pytest.raises(RuntimeError, match="TaskAlignedAssigner was not called"):
        criterion._take_assignment()


@needs_ultralytics
def test_unknown_losses_and_options_are_refused():
    with pytest.raises(ValueError, match="ranking_loss"):
        RankingDetectionModel("yolov8n.yaml", nc=3, verbose=False, ranking_loss="focal")
    with pytest.raises(TypeError, match="sb_weight"):
        RankingDetectionModel("yolov8n.yaml", nc=3, verbose=False, ranking_loss="ap",
                              loss_options={"sb_weight": 2.0})


# ------------------------------------------------------------------ pickling


@needs_ultralytics
@pytest.mark.parametrize("name", TRAINERS + ["RankingLossTrainer", "RankingDetectionModel"])
def test_classes_pickle_by_reference(name):
    import aploss_cuda.integrations.ultralytics as integration

    cls = getattr(integration, name)
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert cls.__module__.encode() in pickle.dumps(cls)  # by name, not by value
    assert pickle.loads(pickle.dumps(PerImageRankSortTrainer)) is PerImageRankSortTrainer


@needs_ultralytics
def test_model_and_criterion_survive_pickling_and_copying():
    # Multi-GPU training pickles the model; the EMA deep-copies it.
    model = fixed_model(ranking_loss="alrp", delta=2.0)
    batch, preds = fixed_batch(), fixed_preds(model)
    model.criterion = model.init_criterion()
    expected = model.criterion(clone_preds(preds), batch)[0]
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert type(other) is RankingDetectionModel
        assert other.ranking_loss == "alrp" and other.loss_options == {"delta": 2.0}
        assert torch.equal(other.criterion(clone_preds(preds), batch)[0], expected)


# ------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """4 training images (2 iterations at batch 2) and 2 validation images."""
    root = tmp_path_factory.mktemp("shapes_yolo")
    return yolo_data.write_yolo_dataset(str(root), {"train": 4, "val": 2})


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def classification_layers(model):
    """The last conv of each classification branch (one per level; both branches of an
    end-to-end head)."""
    head = model.model[-1]
    branches = [head.cv3] + ([head.one2one_cv3] if getattr(head, "one2one_cv3", None) else [])
    return [seq[-1] for branch in branches for seq in branch]


TRAINING_CASES = [(cfg, name) for cfg in ("yolov8n.yaml", END_TO_END_CFG) for name in TRAINERS]
TRAINING_CASES += [("yolov8n.yaml", "PerImageRankSortTrainer"), ("yolov10n.yaml", "ALRPTrainer")]


@needs_ultralytics
@pytest.mark.parametrize("cfg, trainer_name", TRAINING_CASES)
def test_two_training_iterations_through_yolo_train(cfg, trainer_name, tiny_data, tmp_path, one_thread):
    if trainer_name == "PerImageRankSortTrainer":
        trainer = PerImageRankSortTrainer
    else:
        import aploss_cuda.integrations.ultralytics as integration

        trainer = getattr(integration, trainer_name)
    steps = []

    def after_batch(t):
        model = t.model
        grads = [layer.weight.grad for layer in classification_layers(model)]
        steps.append({
            "loss": t.loss.item(),
            "items": {k: float(v) for k, v in t.loss_items.items()},
            "grads": [None if g is None else float(g.abs().sum()) for g in grads],
        })

    yolo = YOLO(cfg)
    yolo.add_callback("on_train_batch_end", after_batch)
    yolo.train(
        trainer=trainer, data=tiny_data, epochs=1, imgsz=IMAGE_SIZE, batch=BATCH, workers=0,
        device="cpu", amp=False, plots=False, val=False, project=str(tmp_path), name="run",
        exist_ok=True, verbose=False,
    )
    model = yolo.trainer.model
    assert type(model) is RankingDetectionModel and model.ranking_loss == trainer.ranking_loss
    assert model.loss_options == trainer.loss_options
    criterion = model.criterion
    if cfg != "yolov8n.yaml":  # the end-to-end heads
        assert isinstance(criterion, RankingE2ELoss)
        branches = [criterion.one2many, criterion.one2one]
    else:
        branches = [criterion]
    for branch in branches:
        assert type(branch).__name__ == {"rank_sort": "RankSortDetectionLoss", "ap": "APDetectionLoss",
                                        "alrp": "ALRPDetectionLoss"}[trainer.ranking_loss]
        assert branch.per_image == trainer.loss_options.get("per_image", False)

    assert len(steps) == 2  # two iterations
    for step in steps:
        assert math.isfinite(step["loss"]) and step["loss"] > 0
        assert all(math.isfinite(v) for v in step["items"].values())
        assert step["items"]["cls_loss"] > 0
        # The first step's gradients, before any optimizer step, reach every level's
        # classification layer (of both branches of an end-to-end head).
    assert all(g is not None and math.isfinite(g) and g > 0 for g in steps[0]["grads"]), steps[0]


# ------------------------------------------------------------------ the example's pieces


def test_yolo_data_set_holds_the_shapes_boxes(tmp_path):
    import numpy as np
    import shapes
    from PIL import Image

    yaml_path = yolo_data.write_yolo_dataset(str(tmp_path), {"train": 3, "val": 1})
    for index in range(3):
        pixels, target = shapes.make_image(0, "train", index)
        image = Image.open(tmp_path / "images" / "train" / f"{index:05d}.png")
        assert torch.equal(torch.from_numpy(np.array(image)).permute(2, 0, 1), pixels)
        lines = (tmp_path / "labels" / "train" / f"{index:05d}.txt").read_text().splitlines()
        assert len(lines) == len(target["labels"])
        for line, box, cls in zip(lines, target["boxes"].tolist(), target["labels"].tolist()):
            c, cx, cy, w, h = line.split()
            assert int(c) == cls
            x1, y1 = (float(cx) - float(w) / 2) * 128, (float(cy) - float(h) / 2) * 128
            x2, y2 = (float(cx) + float(w) / 2) * 128, (float(cy) + float(h) / 2) * 128
            assert [x1, y1, x2, y2] == pytest.approx(box, abs=1e-3)
    text = open(yaml_path).read()
    assert "train: images/train" in text and "  4: ring" in text


def test_yolo_data_set_is_reused_only_when_the_same(tmp_path):
    yaml_path = yolo_data.write_yolo_dataset(str(tmp_path), {"train": 2, "val": 1})
    marker = tmp_path / "images" / "train" / "00000.png"
    marker.write_bytes(b"kept")
    assert yolo_data.write_yolo_dataset(str(tmp_path), {"train": 2, "val": 1}) == yaml_path
    assert marker.read_bytes() == b"kept"  # the same data set: not rewritten
    yolo_data.write_yolo_dataset(str(tmp_path), {"train": 3, "val": 1})
    assert marker.read_bytes() != b"kept"  # another one: written again


def test_budget_is_the_shortest_whose_next_longer_gains_less_than_the_threshold():
    import budget

    def runs(*maps):
        return [{"epochs": 20 * (i + 1), "map": m} for i, m in enumerate(maps)]

    assert budget.THRESHOLD == 0.01
    assert budget.choose(runs(0.60, 0.70, 0.705)) == 40
    assert budget.choose(runs(0.60, 0.605, 0.70)) == 20
    assert budget.choose(runs(0.60, 0.70, 0.75)) == 60  # still improving: the longest
