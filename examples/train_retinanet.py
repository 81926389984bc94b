"""Train the small RetinaNet on the synthetic shapes with focal loss, AP-loss, RS or aLRP loss.

    python examples/train_retinanet.py --loss ap --seed 0
    python examples/train_retinanet.py --loss focal --seed 0
    python examples/train_retinanet.py --loss rs --seed 0     # Rank & Sort loss
    python examples/train_retinanet.py --loss alrp --seed 0   # aLRP loss

A fixed budget of iterations (not of time, so runs are reproducible), SGD with momentum,
linear warm-up then cosine decay. mAP on the val split every ``--eval-every`` iterations
(the curve), and at the end mAP@[.5:.95] and mAP@.5 on the held-out split ``--eval-split``
(test by default; the hyper-parameters were tuned on val). Writes to ``--out``:
log.json (per-iteration losses, evals), result.json, curves.png, predictions.png.
Needs torchvision, torchmetrics, pycocotools, matplotlib and tqdm.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the example's own modules
try:
    import aploss_cuda  # noqa: F401  (installed)
except ImportError:  # not installed: a checkout with the extension built in place
    sys.path.insert(1, os.path.dirname(HERE))

import evaluate  # noqa: E402
import plots  # noqa: E402
import shapes  # noqa: E402
from model import DEFAULT_DELTA, LOSSES, small_retinanet  # noqa: E402

# Tuned per loss on the val split with seed 99 at 1500 iterations (examples/tune.py,
# results/tuning.md), since the losses' gradients differ in scale; RS and aLRP at their
# papers' delta (tune.py --losses rs alrp --lr-only).
DEFAULT_LR = {"focal": 0.08, "ap": 0.04, "rs": 0.02, "alrp": 0.01}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loss", choices=LOSSES, required=True)
    p.add_argument("--seed", type=int, default=0, help="model init and batch order")
    p.add_argument("--lr", type=float, default=None, help="default: DEFAULT_LR[loss]")
    p.add_argument("--delta", type=float, default=None,
                   help="a ranking loss's step half-width; default: DEFAULT_DELTA[loss]")
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--train-images", type=int, default=512)
    p.add_argument("--eval-images", type=int, default=128)
    p.add_argument("--data-seed", type=int, default=0, help="the data set (fixed across runs)")
    p.add_argument("--eval-split", choices=("val", "test"), default="test")
    p.add_argument("--eval-every", type=int, default=250, help="val mAP curve; 0: off")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="default: examples/results/runs/<loss>_seed<S>")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def learning_rate(base, iteration, warmup, total):
    """Linear warm-up from base/10, then cosine decay to 0."""
    if iteration < warmup:
        return base * (0.1 + 0.9 * iteration / warmup)
    progress = (iteration - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def augment(images, targets, generator):
    """Random horizontal and vertical flips: every class is symmetric under both."""
    out_images, out_targets = [], []
    size = images.shape[-1]
    for image, target in zip(images, targets):
        boxes = target["boxes"].clone()
        if torch.rand((), generator=generator) < 0.5:
            image = image.flip(-1)
            boxes[:, [0, 2]] = size - boxes[:, [2, 0]]
        if torch.rand((), generator=generator) < 0.5:
            image = image.flip(-2)
            boxes[:, [1, 3]] = size - boxes[:, [3, 1]]
        out_images.append(image.float() / 255)
        out_targets.append({"boxes": boxes, "labels": target["labels"]})
    return out_images, out_targets


def train(args):
    """Trains one model; returns (result, log, model); writes them and the figures to args.out."""
    torch.set_num_threads(args.threads)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.loss]
    delta = args.delta if args.delta is not None else DEFAULT_DELTA.get(args.loss)
    out = args.out or os.path.join(HERE, "results", "runs", f"{args.loss}_seed{args.seed}")
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()

    train_images, train_targets = shapes.make_split("train", args.train_images, args.data_seed)
    val_images, val_targets = shapes.make_split("val", args.eval_images, args.data_seed)
    if args.eval_split == "val":
        eval_images, eval_targets = val_images, val_targets
    else:
        eval_images, eval_targets = shapes.make_split(args.eval_split, args.eval_images, args.data_seed)

    torch.manual_seed(args.seed)
    # aLRP's self-balancing weight is updated once an epoch, as the released heads do.
    sb_period = max(1, args.train_images // args.batch_size)
    model = small_retinanet(len(shapes.CLASSES), loss=args.loss, delta=delta, sb_period=sb_period)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # norms and biases
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
    )
    generator = torch.Generator().manual_seed(args.seed)

    log = {"classification": [], "bbox_regression": [], "evals": []}
    order = torch.empty(0, dtype=torch.int64)
    bar = tqdm(range(args.iters), desc=f"{args.loss} seed {args.seed}", disable=args.no_progress)
    for iteration in bar:
        if len(order) < args.batch_size:  # a new epoch: a fresh permutation
            order = torch.cat([order, torch.randperm(len(train_images), generator=generator)])
        batch, order = order[: args.batch_size], order[args.batch_size :]
        images, targets = augment(train_images[batch], [train_targets[i] for i in batch], generator)

        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, iteration, args.warmup, args.iters)
        losses = model(images, targets)
        total = losses["classification"] + losses["bbox_regression"]
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss at iteration {iteration}: {losses}")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

        for key in ("classification", "bbox_regression"):
            log[key].append(losses[key].item())
        bar.set_postfix(cls=f"{log['classification'][-1]:.3f}", box=f"{log['bbox_regression'][-1]:.3f}")
        done = iteration + 1
        if args.eval_every and (done % args.eval_every == 0 or done == args.iters):
            log["evals"].append({"iteration": done, **evaluate.evaluate(model, val_images, val_targets)})
    train_seconds = time.perf_counter() - start

    detections = evaluate.predict(model, eval_images)
    metrics = evaluate.coco_map(detections, eval_targets)
    result = {
        "loss": args.loss,
        "seed": args.seed,
        "lr": lr,
        "delta": delta,
        "iters": args.iters,
        "batch_size": args.batch_size,
        "train_images": args.train_images,
        "eval_split": args.eval_split,
        "eval_images": args.eval_images,
        **metrics,
        "wall_seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
    }
    with open(os.path.join(out, "log.json"), "w") as f:
        json.dump(log, f)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    plots.plot_curves({args.loss: [log]}, os.path.join(out, "curves.png"))
    drawn = plots.draw_detections(eval_images[:8], detections[:8], eval_targets[:8], shapes.CLASSES)
    plots.save_grid(drawn, os.path.join(out, "predictions.png"))
    return result, log, model


def main(argv=None):
    args = parse_args(argv)
    result, _, _ = train(args)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
