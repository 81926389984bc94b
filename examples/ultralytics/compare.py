"""BCE (YOLO's default) against Rank & Sort, AP-loss and aLRP: YOLOv8n, 3 seeds each.

    python examples/ultralytics/compare.py --epochs 30

Trains every (loss, seed) in turn with train_yolo.py's settings, each loss at its rate
from results/tuning.json (tune.py), and scores the last weights on the test split with
Ultralytics' validator. Writes results/compare.json (every run, the summary, the machine),
results/compare.md (the table, the val curves) and results/curves.png. A run whose
result is already in results/runs/ is not rerun.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import train_yolo  # noqa: E402
from run_record import LOSS_NAMES, machine, markdown_table  # noqa: E402

RESULTS = os.path.join(HERE, "results")
CURVE_EVERY = 5  # epochs between the columns of the val-curve table


def tuned_lrs():
    with open(os.path.join(RESULTS, "tuning.json")) as f:
        tuning = json.load(f)
    return {loss: entry["best_lr"] for loss, entry in tuning["losses"].items()}, tuning["epochs"]


def run(loss, seed, lr, epochs):
    out = os.path.join(RESULTS, "runs", f"{loss}_seed{seed}")
    path = os.path.join(out, "result.json")
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
        if (result["lr"], result["epochs"]) == (lr, epochs):
            return result
    return train_yolo.train(train_yolo.parse_args(
        ["--loss", loss, "--seed", str(seed), "--lr", str(lr), "--epochs", str(epochs),
         "--eval-split", "test", "--out", out]
    ))


def mean_std(values):
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(results):
    summary = {}
    for loss in dict.fromkeys(r["loss"] for r in results):
        runs = [r for r in results if r["loss"] == loss]
        curves = [r["val_curve"] for r in runs]
        summary[loss] = {
            "lr": runs[0]["lr"], "seeds": [r["seed"] for r in runs],
            "val_curve_mean": [statistics.mean(c[i] for c in curves) for i in range(len(curves[0]))],
        }
        for key in ("map", "map_50", "wall_seconds"):
            mean, std = mean_std([r[key] for r in runs])
            summary[loss][key] = {"mean": mean, "std": std}
    return summary


def markdown(summary, results, info, command, tuning_epochs):
    epochs = results[0]["epochs"]
    rows = []
    for loss, s in summary.items():
        per_seed = ", ".join(f"{r['map']:.3f}" for r in results if r["loss"] == loss)
        rows.append([LOSS_NAMES[loss], f"{s['lr']:g}", f"{s['map']['mean']:.3f} ± {s['map']['std']:.3f}",
                     f"{s['map_50']['mean']:.3f} ± {s['map_50']['std']:.3f}", per_seed,
                     f"{s['wall_seconds']['mean'] / 60:.1f} min"])
    marks = [e for e in range(CURVE_EVERY, epochs + 1, CURVE_EVERY)]
    if marks[-1] != epochs:
        marks.append(epochs)
    curve_rows = [[LOSS_NAMES[loss]] + [f"{s['val_curve_mean'][e - 1]:.3f}" for e in marks]
                  for loss, s in summary.items()]
    return "\n".join([
        "# YOLOv8n on synthetic shapes: BCE against the ranking losses", "",
        f"Command: `{command}`  ",
        f"Commit {info['commit']}{' (with uncommitted changes)' if info['dirty'] else ''}, "
        f"ultralytics {info['ultralytics']}, torch {info['torch']}, "
        f"{'/'.join(str(t) for t in sorted(set(r['threads'] for r in results)))} torch thread per run, "
        f"{info['cpu_count']} CPU cores (shared with other work: at most two runs at once); "
        f"{sum(r['wall_seconds'] for r in results) / 60:.0f} min of runs in all ({len(results)} "
        "runs, each timed in its result.json; a run already in results/runs/ is not rerun, so "
        "one table may gather runs from several invocations).", "",
        f"mAP of the last weights on the held-out **test** split (128 images) by Ultralytics' "
        f"validator (`conf=0`), mean ± sample std over seeds {sorted(set(r['seed'] for r in results))}:", "",
        markdown_table(["loss", "lr (AdamW)", "mAP50-95", "mAP50", "per seed mAP50-95", "wall / run"], rows), "",
        f"Settings, the same for every loss but the loss and the rate: `yolov8n.yaml` from "
        f"scratch, {epochs} epochs of the 512 training images at 128 px, batch 16, one optimizer "
        "step per batch, YOLO's default schedule and augmentation (`train_yolo.py`). Rates: each "
        f"loss's best on the val split at {tuning_epochs} epochs, seed 99 (`tuning.md`).", "",
        f"Mean val mAP50-95 over the seeds, by epoch:", "",
        markdown_table(["loss"] + [str(e) for e in marks], curve_rows), "",
        "![curves](curves.png)", "",
    ])


def plot(summary, results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, finals) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for i, (loss, s) in enumerate(summary.items()):
        colour = f"C{i}"
        for r in (r for r in results if r["loss"] == loss):
            curves.plot(range(1, len(r["val_curve"]) + 1), r["val_curve"], color=colour, alpha=0.25, lw=0.8)
        curves.plot(range(1, len(s["val_curve_mean"]) + 1), s["val_curve_mean"], color=colour,
                    label=LOSS_NAMES[loss])
        maps = [r["map"] for r in results if r["loss"] == loss]
        finals.scatter([i] * len(maps), maps, color=colour, alpha=0.6)
        finals.errorbar([i + 0.15], [s["map"]["mean"]], yerr=[s["map"]["std"]], fmt="o", color=colour)
    curves.set(xlabel="epoch", ylabel="val mAP50-95", title="val curves (thin: seeds; thick: mean)")
    curves.legend()
    finals.set_xticks(range(len(summary)), [LOSS_NAMES[k].split(" (")[0] for k in summary])
    finals.set(ylabel="test mAP50-95", title="test: seeds, mean ± std")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--losses", nargs="+", choices=train_yolo.LOSSES, default=list(train_yolo.LOSSES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, required=True)
    args = p.parse_args(argv)
    lrs, tuning_epochs = tuned_lrs()
    info, start = machine(), time.perf_counter()
    results = []
    for loss in args.losses:
        for seed in args.seeds:
            results.append(run(loss, seed, lrs[loss], args.epochs))
            print(json.dumps({k: results[-1][k] for k in ("loss", "seed", "lr", "map", "map_50")}), flush=True)
    info.update(load_average_end_1m=os.getloadavg()[0], total_minutes=(time.perf_counter() - start) / 60)
    command = "python examples/ultralytics/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = summarise(results)
    with open(os.path.join(RESULTS, "compare.json"), "w") as f:
        json.dump({"summary": summary, "runs": results, "command": command, "machine": info}, f, indent=1)
    with open(os.path.join(RESULTS, "compare.md"), "w") as f:
        f.write(markdown(summary, results, info, command, tuning_epochs))
    plot(summary, results, os.path.join(RESULTS, "curves.png"))
    print(open(os.path.join(RESULTS, "compare.md")).read())


if __name__ == "__main__":
    main()
