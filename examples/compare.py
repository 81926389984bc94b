"""Focal loss against ranking-based losses: the small RetinaNet, 3 seeds each, one table.

    python examples/compare.py            # focal vs AP-loss: 13.4 minutes on 2 CPU cores
    python examples/compare.py --losses focal ap rs alrp --out examples/results/ranking

Runs train_retinanet.train for every (loss, seed) in turn with the same data, budget and
schedule (each loss at its default learning rate, see train_retinanet.DEFAULT_LR and
tune.py), then writes to --out (default examples/results/): compare.json (every run, the
summary, where it ran), compare.md (the table), curves.png (every run's curves) and
predictions.png (the first seed of each loss on the same held-out images). Per-run
outputs go to <out>/runs/.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import evaluate  # noqa: E402
import plots  # noqa: E402
import shapes  # noqa: E402
import train_retinanet  # noqa: E402
from model import LOSSES  # noqa: E402
from run_info import run_info  # noqa: E402

LOSS_NAMES = {"focal": "focal loss", "ap": "AP-loss", "rs": "RS loss", "alrp": "aLRP loss"}
BOX_LOSSES = {
    "focal": "torchvision's L1 loss",
    "ap": "torchvision's L1 loss",
    "rs": "GIoU loss weighted by each positive's score, balanced to the RS loss's value",
    "alrp": "aLRP's localisation component (GIoU), times its self-balancing weight",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--losses", nargs="+", choices=LOSSES, default=["focal", "ap"])
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="passed to train_retinanet for every run (e.g. --extra --iters 500)")
    return p.parse_args(argv)


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results):
    summary = {}
    for loss in dict.fromkeys(r["loss"] for r in results):
        runs = [r for r in results if r["loss"] == loss]
        summary[loss] = {"seeds": [r["seed"] for r in runs], "lr": runs[0]["lr"],
                         "delta": runs[0]["delta"] if loss != "focal" else None}
        for key in ("map", "map_50", "wall_seconds"):
            mean, std = mean_std([r[key] for r in runs])
            summary[loss][key] = {"mean": mean, "std": std}
    return summary


def markdown(summary, results, info, total_seconds, command):
    first = results[0]
    names = [LOSS_NAMES[loss] for loss in summary]
    box_losses = "; ".join(f"{LOSS_NAMES[loss]}: {BOX_LOSSES[loss]}" for loss in summary)
    lines = [
        f"# {' vs '.join(names)}: a small RetinaNet on synthetic shapes",
        "",
        f"Command: `{command}`  ",
        f"Total wall time: **{total_seconds / 60:.1f} min** for {len(results)} runs "
        f"(training, val-curve evaluations and the final evaluation).  ",
        f"Commit {info['commit']}{' (with uncommitted changes)' if info['dirty'] else ''}, "
        f"torch {info['torch']}, torchvision {info['torchvision']}, {info['cpu_count']} CPU cores, "
        f"{info['torch_threads']} torch threads, 1-min load average at the start "
        f"{info['load_average_1m']:.2f}, at the end {info['load_average_end_1m']:.2f}.",
        "",
        f"mAP on the held-out **{first['eval_split']}** split ({first['eval_images']} images), "
        "mean ± sample std over seeds (COCO-style, pycocotools via torchmetrics):",
        "",
        "| loss | lr | mAP@[.5:.95] | mAP@.5 | per seed mAP@[.5:.95] | wall / run |",
        "|---|---|---|---|---|---|",
    ]
    for loss, s in summary.items():
        per_seed = ", ".join(f"{r['map']:.3f}" for r in results if r["loss"] == loss)
        name = LOSS_NAMES[loss] + (f" (delta {s['delta']:g})" if s["delta"] is not None else "")
        lines.append(
            f"| {name} | {s['lr']:g} | {s['map']['mean']:.3f} ± {s['map']['std']:.3f} "
            f"| {s['map_50']['mean']:.3f} ± {s['map_50']['std']:.3f} | {per_seed} "
            f"| {s['wall_seconds']['mean'] / 60:.1f} min |"
        )
    lines += [
        "",
        f"Seeds {sorted(set(r['seed'] for r in results))} (model init, batch order, flips); "
        "the data set is fixed (data seed 0).",
        "",
        "Settings, identical for every loss except the losses and the learning "
        f"rate: {first['train_images']} training images of 128 px, {first['iters']} iterations "
        f"of batch {first['batch_size']} (about {first['iters'] * first['batch_size'] / first['train_images']:.0f} "
        "epochs), SGD momentum 0.9, weight decay 1e-4, 100 warm-up iterations then cosine decay, "
        "random flips; the model of `examples/model.py` (about 0.94 M parameters, from scratch); "
        f"box regression: {box_losses}. Each ranking loss is one ranking over all "
        "anchors x classes of the batch (the papers' minibatch setting). Learning rates: "
        "train_retinanet.DEFAULT_LR, tuned per loss on the val split with seed 99 at 1500 "
        "iterations (`examples/results/tuning.md`).",
        "",
        "![curves](curves.png)",
        "",
        f"Predictions (top 5 per image, seed {results[0]['seed']}; white: ground truth), one row "
        f"per loss, top to bottom: {', '.join(names)}.",
        "",
        "![predictions](predictions.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    info = run_info()
    start = time.perf_counter()
    results, logs, detections = [], {}, {}
    eval_images = eval_targets = None
    for loss in args.losses:
        for seed in args.seeds:
            run_args = train_retinanet.parse_args(
                ["--loss", loss, "--seed", str(seed),
                 "--out", os.path.join(args.out, "runs", f"{loss}_seed{seed}"), *args.extra]
            )
            result, log, model = train_retinanet.train(run_args)
            print(json.dumps(result), flush=True)
            results.append(result)
            logs.setdefault(loss, []).append(log)
            if seed == args.seeds[0]:  # figures of the first seed
                if eval_images is None:
                    eval_images, eval_targets = shapes.make_split(
                        run_args.eval_split, 4, run_args.data_seed
                    )
                detections[loss] = evaluate.predict(model, eval_images)
    total = time.perf_counter() - start
    info["load_average_end_1m"] = os.getloadavg()[0]

    summary = summarise(results)
    command = "python examples/compare.py" + (" " + " ".join(argv) if argv else "")
    if argv is None and len(sys.argv) > 1:
        command = "python examples/compare.py " + " ".join(sys.argv[1:])
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump({"summary": summary, "runs": results, "total_wall_seconds": total,
                   "command": command, "machine": info}, f, indent=1)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(markdown(summary, results, info, total, command))
    plots.plot_curves(logs, os.path.join(args.out, "curves.png"))
    drawn = []
    for loss in args.losses:
        drawn += plots.draw_detections(eval_images, detections[loss], eval_targets, shapes.CLASSES)
    plots.save_grid(drawn, os.path.join(args.out, "predictions.png"), nrow=len(eval_images))
    print(open(os.path.join(args.out, "compare.md")).read())


if __name__ == "__main__":
    main()
