"""The learning-rate search behind compare.py: each loss's AdamW rate on the val split.

    python examples/ultralytics/tune.py --epochs 15       # every loss

Every configuration trains with seed 99 (not one of compare.py's seeds) and is scored on
the val split, so the test split that compare.py reports stays unseen. The grid LRS (YOLO's
own rate for 5 classes, twice and four times it) is extended by doubling or halving while
the best rate is at its edge. A configuration whose result is already in results/tuning/
is not rerun, nor is a BCE configuration that budget.py ran (the same seed, settings, split). Writes results/tuning.json (every run
and each loss's best rate, which compare.py uses) and results/tuning.md.
"""

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import budget  # noqa: E402
import train_yolo  # noqa: E402
from run_record import LOSS_NAMES, machine, markdown_table  # noqa: E402

SEED = 99
LRS = tuple(round(train_yolo.YOLO_AUTO_LR * k, 6) for k in (1, 2, 4))
MAX_EXTENSIONS = 2
RESULTS = os.path.join(HERE, "results")
TUNING_JSON = os.path.join(RESULTS, "tuning.json")


def run(loss, lr, epochs):
    out = os.path.join(RESULTS, "tuning", f"{loss}_lr{lr:g}")
    path = os.path.join(out, "result.json")
    same_budget_run = os.path.join(budget.result_dir(lr, epochs), "result.json")
    reusable = loss == "bce" and os.path.exists(same_budget_run)
    if reusable and not os.path.exists(path):
        os.makedirs(out, exist_ok=True)
        shutil.copyfile(same_budget_run, path)  # the same seed, settings and split
    if not os.path.exists(path):
        train_yolo.train(train_yolo.parse_args(
            ["--loss", loss, "--lr", str(lr), "--seed", str(SEED), "--epochs", str(epochs),
             "--eval-split", "val", "--out", out]
        ))
    with open(path) as f:
        result = json.load(f)
    if result["epochs"] != epochs:
        raise SystemExit(f"{path} is a {result['epochs']}-epoch run; remove results/tuning/ to retune")
    return result


def search(loss, epochs):
    """LRS for ``loss``, extended past an edge that holds the best result."""
    results = [run(loss, lr, epochs) for lr in LRS]
    for _ in range(MAX_EXTENSIONS):
        lrs = [r["lr"] for r in results]
        top = max(results, key=lambda r: r["map"])["lr"]
        if top == max(lrs):
            results.append(run(loss, max(lrs) * 2, epochs))
        elif top == min(lrs):
            results.insert(0, run(loss, min(lrs) / 2, epochs))
        else:
            break
    return sorted(results, key=lambda r: r["lr"])


def markdown(tuning):
    rows = []
    for loss, entry in tuning["losses"].items():
        for r in entry["runs"]:
            best = " **best**" if r["lr"] == entry["best_lr"] else ""
            rows.append([LOSS_NAMES[loss], f"{r['lr']:g}", f"{r['map']:.3f}{best}", f"{r['map_50']:.3f}",
                         f"{r['wall_seconds'] / 60:.1f} min"])
    m = tuning["machine"]
    return "\n".join([
        "# Learning rates of YOLOv8n with each classification loss (val split)", "",
        f"Command: `{tuning['command']}`  ",
        f"Commit {m['commit']}, ultralytics {m['ultralytics']}, torch {m['torch']}, {m['threads']} "
        f"torch thread, {m['cpu_count']} CPU cores (shared).", "",
        f"Seed {SEED}, {tuning['epochs']} epochs of 512 training images, AdamW at the rate below, "
        "otherwise compare.py's settings (train_yolo.py); mAP of the last weights on the val split "
        "(128 images) by Ultralytics' validator:", "",
        markdown_table(["loss", "lr", "mAP50-95", "mAP50", "wall"], rows), "",
    ])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--losses", nargs="+", choices=train_yolo.LOSSES, default=list(train_yolo.LOSSES))
    p.add_argument("--epochs", type=int, required=True)
    args = p.parse_args(argv)
    tuning = {"losses": {}}
    if os.path.exists(TUNING_JSON):
        with open(TUNING_JSON) as f:
            tuning = json.load(f)
    for loss in args.losses:
        runs = search(loss, args.epochs)
        best = max(runs, key=lambda r: r["map"])
        tuning["losses"][loss] = {"best_lr": best["lr"], "runs": runs}
        print(f"{loss}: best lr {best['lr']:g} (val mAP50-95 {best['map']:.3f})", flush=True)
    tuning.update(epochs=args.epochs, seed=SEED, machine=machine(),
                  command="python examples/ultralytics/tune.py " + " ".join(sys.argv[1:] if argv is None else argv))
    with open(TUNING_JSON, "w") as f:
        json.dump(tuning, f, indent=1)
    with open(os.path.join(RESULTS, "tuning.md"), "w") as f:
        f.write(markdown(tuning))


if __name__ == "__main__":
    main()
