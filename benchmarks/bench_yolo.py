"""Section 'yolo': the ranking losses at Ultralytics YOLO's scale against YOLO's BCE.

One YOLOv8 training batch: 16 images of 640 px give 8,400 anchors (80^2 + 40^2 + 20^2) x
80 classes x 16 = 10.75M logits, of which a few hundred are positives (the
TaskAlignedAssigner's top 10 anchors per object). At each P the calls run on the same
(images, anchors, classes) logits in the same interleaved rounds (common/timing.py):

- ``bce``: YOLO's classification term, BCE with logits over every entry against the soft
  targets, summed and divided by the targets' sum (``v8DetectionLoss``'s formula);
- ``rank_sort`` on the soft targets, ``ap`` and ``alrp`` on the 0/1 labels (aLRP with one
  regression loss per positive requiring grad, so both gradients are in the time);
- the same three with one ranking per image (``group_ids``, the integration's
  ``per_image=True``).

YOLO ignores no entry. Scores in the section's regime (``init`` unless ``--regime
trained``); soft targets of the positives uniform in [0.05, 1).
"""

import statistics

import torch
import torch.nn.functional as F

import aploss_cuda
from common.inputs import make_problem
from common.machine import OtherProcessesCpu
from common.tables import NOT_MEASURED, fmt_count, fmt_ratio, fmt_time, markdown_table
from common.timing import fwd_bwd, interleaved, rotating, timed

ANCHORS_640 = 80 * 80 + 40 * 40 + 20 * 20  # strides 8, 16, 32
CLASSES = 80
TARGET_LOW = 0.05
RS_DELTA, AP_DELTA, ALRP_DELTA = 0.5, 1.0, 1.0  # the integration's defaults (the papers')


def yolo_bce(scores, targets):
    return F.binary_cross_entropy_with_logits(scores, targets, reduction="none").sum() / (
        targets.sum().clamp(min=1)
    )


def _per_image(scores):
    return torch.arange(scores.shape[0], device=scores.device)[:, None, None]


def _alrp(group):
    def total(scores, inputs):
        labels, regression_losses = inputs
        regression_losses.grad = None
        group_ids = _per_image(scores) if group else None
        cls_loss, loc_loss = aploss_cuda.alrp_loss(
            scores, labels, regression_losses, delta=ALRP_DELTA, group_ids=group_ids
        )
        return cls_loss + loc_loss
    return total


# name -> (title, which input it takes, fn(scores, input))
IMPLEMENTATIONS = {
    "bce": ("YOLO's BCE", "targets", yolo_bce),
    "rank_sort": ("rank_sort_loss", "targets",
                  lambda s, t: aploss_cuda.rank_sort_loss(s, t, delta=RS_DELTA)),
    "ap": ("ap_loss", "labels", lambda s, y: aploss_cuda.ap_loss(s, y, delta=AP_DELTA)),
    "alrp": ("alrp_loss", "alrp", _alrp(group=False)),
    "rank_sort-image": ("rank_sort_loss per image", "targets",
                        lambda s, t: aploss_cuda.rank_sort_loss(s, t, delta=RS_DELTA,
                                                                group_ids=_per_image(s))),
    "ap-image": ("ap_loss per image", "labels",
                 lambda s, y: aploss_cuda.ap_loss(s, y, delta=AP_DELTA, group_ids=_per_image(s))),
    "alrp-image": ("alrp_loss per image", "alrp", _alrp(group=True)),
}


def plan(cfg):
    return list(cfg.yolo_positives)


def make_inputs(images, p, regime, seed, device):
    """(scores (images, anchors, classes) requiring grad, {input name: tensor})."""
    n = images * ANCHORS_640 * CLASSES
    scores, labels = make_problem(n, p, regime, device=device, seed=seed, ignore_frac=0.0,
                                  label_dtype=torch.int8)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    positive = labels == 1
    targets = torch.zeros(n, device=device)
    targets[positive] = torch.rand(p, generator=gen, device=device) * (1 - TARGET_LOW) + TARGET_LOW
    regression = torch.rand(p, generator=gen, device=device).requires_grad_()
    shape = (images, ANCHORS_640, CLASSES)
    labels = labels.view(shape)
    return scores.view(shape).requires_grad_(), {
        "targets": targets.view(shape), "labels": labels, "alrp": (labels, regression),
    }


def measure_point(cfg, p, seed):
    copies = [make_inputs(cfg.yolo_images, p, cfg.family_regime, seed * 2 + c, cfg.device)
              for c in range(2)]
    scores, inputs = copies[0]
    rows, thunks, first = {}, {}, {}
    for name, (_, key, fn) in IMPLEMENTATIONS.items():
        if name != "bce" and not cfg.kernels_usable:
            rows[name] = dict(status="not run", why="aploss_cuda.info(): CUDA kernels not usable")
            continue
        first[name], _ = timed(lambda: fwd_bwd(fn, scores, inputs[key]))  # warm-up
        rows[name] = dict(status="measured")
        thunks[name] = rotating(fn, [(s, extra[key]) for s, extra in copies])
    samples = interleaved(thunks, first, rounds=cfg.rounds, round_s=cfg.round_s, budget_s=cfg.budget)
    for name, seconds in samples.items():
        rows[name].update(median_s=statistics.median(seconds), samples=seconds)
        if name != "bce":
            rows[name]["vs_bce_rounds"] = [a / b for a, b in zip(seconds, samples["bce"])]
    return dict(images=cfg.yolo_images, n=int(scores.numel()), p=p, impls=rows)


def run(cfg, progress):
    points = []
    for i, p in enumerate(plan(cfg)):
        cpu = OtherProcessesCpu().start()
        point = measure_point(cfg, p, cfg.seed * 1_000_003 + 7_777 + i)
        point["other_cpu_share"] = cpu.stop()
        points.append(point)
        progress.step(f"yolo P={p:,}")
    return dict(regime=cfg.family_regime, points=points)


def _ratio_cell(rounds):
    """median of the per-round ratios [lowest, highest]"""
    if not rounds:
        return NOT_MEASURED
    return (f"{fmt_ratio(statistics.median(rounds))} "
            f"[{fmt_ratio(min(rounds))}, {fmt_ratio(max(rounds))}]")


def markdown(section):
    out = ["## YOLO scale: the ranking losses against YOLO's BCE", "",
           f"Regime '{section['regime']}'. One YOLOv8 batch at 640 px: images x {ANCHORS_640:,} "
           f"anchors x {CLASSES} classes, float32 scores, int8 labels, no ignored entry (this "
           "section's own inputs, whatever the header's label options say). fwd+bwd of each "
           "call; BCE is YOLO's "
           "classification term (BCE with logits over every entry against the soft targets, "
           "summed, divided by the targets' sum); Rank & Sort on the soft targets (positives "
           f"uniform [{TARGET_LOW:g}, 1)), AP-loss and aLRP on the labels (aLRP: `(cls_loss + "
           "loc_loss).backward()`, one regression loss per positive requiring grad); 'per image': "
           "`group_ids` one ranking per image. Ratios: the median of the per-round ratios "
           "[lowest, highest round].", ""]
    for pt in section["points"]:
        rows = []
        for name, (title, _, _) in IMPLEMENTATIONS.items():
            row = pt["impls"][name]
            time_cell = fmt_time(row.get("median_s")) if "median_s" in row else NOT_MEASURED
            rows.append([title, time_cell, "1" if name == "bce" else _ratio_cell(row.get("vs_bce_rounds"))])
        other = pt.get("other_cpu_share")
        out += [f"### {pt['images']} images: N = {pt['n']:,} ({fmt_count(pt['n'])}), P = {pt['p']:,}", "",
                markdown_table(["call", "fwd+bwd median", "/ YOLO's BCE [rounds]"], rows), ""]
        if other is not None:
            out += [f"Other processes used {100 * other:.1f}% of the CPUs during this point.", ""]
    return "\n".join(out)
