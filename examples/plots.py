"""Figures: training curves of one or more runs, and detections drawn on images."""

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import draw_bounding_boxes, make_grid  # noqa: E402

COLOURS = {"focal": "tab:blue", "ap": "tab:red", "rs": "tab:green", "alrp": "tab:purple"}
TITLES = {"focal": "focal loss", "ap": "AP-loss = 1 - AP", "rs": "RS loss",
          "alrp": "aLRP cls. = 1 - prec."}
SMOOTHING_WINDOW = 50  # iterations in the trailing mean of the training curves


def smoothed(values, window=SMOOTHING_WINDOW):
    """A per-iteration series and its trailing mean, one point per iteration.

    Returns (iterations, means): iterations 1..len(values) (the count of training steps
    done, as the evaluation points of train_retinanet use), and at iteration k the mean
    of the last ``window`` values up to and including k (of all k values while k <
    window). The curve covers the whole run: nothing is dropped at either end.
    """
    values = np.asarray(values, dtype=np.float64)
    iterations = np.arange(1, len(values) + 1)
    sums = np.concatenate(([0.0], np.cumsum(values)))
    start = np.maximum(iterations - window, 0)
    return iterations, (sums[iterations] - sums[start]) / (iterations - start)


def plot_curves(runs_by_loss, path):
    """runs_by_loss: {loss: [log, ...]} (a loss of COLOURS), each log as written by train_retinanet.

    Classification losses differ in kind (1 - AP, focal, ...), so each loss gets its own
    panel; the box-regression losses (each loss's own: L1 for focal and AP-loss, GIoU-based
    for RS and aLRP) and the held-out mAP share axes.
    """
    losses = [loss for loss in COLOURS if loss in runs_by_loss]
    fig, axes = plt.subplots(1, len(losses) + 2, figsize=(4 * (len(losses) + 2), 3.6))
    for axis, loss in zip(axes, losses):
        axis.set_title(f"{TITLES[loss]} (train, mean of last {SMOOTHING_WINDOW})")
    for loss, logs in runs_by_loss.items():
        colour = COLOURS.get(loss, None)
        for k, log in enumerate(logs):
            label = f"{loss}" if k == 0 else None
            cls_axis = axes[losses.index(loss)]
            cls_axis.plot(*smoothed(log["classification"]), color=colour, alpha=0.7, label=label)
            axes[-2].plot(*smoothed(log["bbox_regression"]), color=colour, alpha=0.7, label=label)
            its = [e["iteration"] for e in log["evals"]]
            axes[-1].plot(its, [e["map"] for e in log["evals"]], "o-", color=colour, alpha=0.7,
                          label=label)
    axes[-2].set_title(f"box regression loss (train, mean of last {SMOOTHING_WINDOW})")
    axes[-1].set_title("mAP@[.5:.95] (val split)")
    for axis in axes:
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    for axis in axes[-2:]:
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _save_small_png(grid, path):
    """Saves a float (3, h, w) image in [0, 1] as a 256-colour PNG (a few times smaller)."""
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).quantize(256).save(path, optimize=True)


def draw_detections(images, detections, targets, class_names, min_score=None, top=5):
    """Images (2x) with ground truth (white) and each image's best detections (colour).

    Detections are those above ``min_score`` if given, else the ``top`` highest: AP-loss
    scores are not calibrated, so a fixed threshold would not be comparable across losses.
    """
    palette = ["red", "lime", "cyan", "yellow", "magenta", "orange", "blue"]
    drawn = []
    for image, det, tgt in zip(images, detections, targets):
        keep = det["scores"] >= min_score if min_score is not None else slice(0, top)
        boxes, labels, scores = det["boxes"][keep], det["labels"][keep], det["scores"][keep]
        big = torch.nn.functional.interpolate(image[None].float(), scale_factor=2)[0]
        big = big.clamp(0, 255).to(torch.uint8)
        big = draw_bounding_boxes(big, tgt["boxes"] * 2, colors="white", width=1)
        names = [f"{class_names[int(c)]} {s:.2f}" for c, s in zip(labels, scores)]
        colours = [palette[int(c) % len(palette)] for c in labels]
        big = draw_bounding_boxes(big, boxes * 2, names, colors=colours, width=2)
        drawn.append(big)
    return drawn


def save_grid(drawn, path, nrow=4):
    """Saves images (uint8 (3, h, w)) as one grid PNG."""
    _save_small_png(make_grid(drawn, nrow=nrow, padding=4).float() / 255, path)


if __name__ == "__main__":
    # Self-check of the smoothing: every iteration of a run is drawn, the last at x = len.
    its, means = smoothed(np.arange(150.0), window=50)
    assert len(its) == len(means) == 150 and its[0] == 1 and its[-1] == 150, (its, means)
    assert means[0] == 0.0 and means[1] == 0.5 and means[49] == 24.5  # growing window
    assert means[-1] == np.mean(np.arange(100.0, 150.0))  # the last 50 values
    its, means = smoothed([2.0, 4.0], window=50)  # shorter than the window
    assert its.tolist() == [1, 2] and means.tolist() == [2.0, 3.0]
    assert len(smoothed([])[0]) == 0
    print("plots.smoothed: ok")
