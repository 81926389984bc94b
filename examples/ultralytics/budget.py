"""The training budget: the number of epochs after which YOLO's BCE stops improving.

    python examples/ultralytics/budget.py --epochs 20 40 60                # YOLO's own rate
    python examples/ultralytics/budget.py --epochs 20 40 60 --lr 0.004444   # BCE's tuned rate

Trains YOLO's default loss (BCE), seed 99, AdamW at ``--lr`` (default YOLO's own rate for
5 classes, 0.00111), a complete schedule per budget (warm-up, linear decay to the end,
mosaic closed for the last 10 epochs), and scores each on the val split. The budget is the
shortest whose next longer one gains less than THRESHOLD mAP50-95. A budget whose result
is already in results/budget/ is not rerun. Writes results/budget.json (one entry per
rate) and results/budget.md.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import train_yolo  # noqa: E402
from run_record import machine, markdown_table  # noqa: E402

SEED = 99
THRESHOLD = 0.01  # about the seed-to-seed spread of one configuration's val mAP50-95
RESULTS = os.path.join(HERE, "results")


def result_dir(lr, epochs):
    return os.path.join(RESULTS, "budget", f"bce_lr{lr:g}_{epochs}ep")


def run(lr, epochs):
    out = result_dir(lr, epochs)
    path = os.path.join(out, "result.json")
    if not os.path.exists(path):
        train_yolo.train(train_yolo.parse_args(
            ["--loss", "bce", "--seed", str(SEED), "--lr", str(lr), "--epochs", str(epochs),
             "--eval-split", "val", "--out", out]
        ))
    with open(path) as f:
        return json.load(f)


def choose(results):
    """The shortest budget whose next longer one gains less than THRESHOLD (else the longest)."""
    for shorter, longer in zip(results, results[1:]):
        if longer["map"] - shorter["map"] < THRESHOLD:
            return shorter["epochs"]
    return results[-1]["epochs"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, nargs="+", required=True)
    p.add_argument("--lr", type=float, default=train_yolo.YOLO_AUTO_LR)
    args = p.parse_args(argv)
    results = [run(args.lr, e) for e in sorted(args.epochs)]
    path = os.path.join(RESULTS, "budget.json")
    searches = {}
    if os.path.exists(path):
        with open(path) as f:
            searches = json.load(f)
    searches[f"{args.lr:g}"] = {
        "lr": args.lr, "budget_epochs": choose(results), "threshold": THRESHOLD, "runs": results,
        "command": "python examples/ultralytics/budget.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
    }
    with open(path, "w") as f:
        json.dump(searches, f, indent=1)
    text = markdown(searches)
    with open(os.path.join(RESULTS, "budget.md"), "w") as f:
        f.write(text)
    print(text)


def markdown(searches):
    lines = ["# The training budget: where YOLO's BCE stops improving", "",
             f"BCE, seed {SEED}, AdamW at the rate named, one complete schedule per budget; mAP of "
             "the last weights on the val split (128 images) by Ultralytics' validator. The budget "
             f"is the shortest whose next longer budget gains less than {THRESHOLD:g} mAP50-95.", ""]
    for search in searches.values():
        results, info = search["runs"], search["machine"]
        rows = [[r["epochs"], f"{r['map']:.3f}", f"{r['map_50']:.3f}",
                 "" if i == 0 else f"{r['map'] - results[i - 1]['map']:+.3f}",
                 f"{r['wall_seconds'] / 60:.1f} min"] for i, r in enumerate(results)]
        auto = " (YOLO's own rate for 5 classes)" if search["lr"] == train_yolo.YOLO_AUTO_LR else ""
        lines += [f"## lr {search['lr']:g}{auto}", "",
                  f"Command: `{search['command']}`  ",
                  f"Commit {info['commit']}, ultralytics {info['ultralytics']}, torch {info['torch']}, "
                  "one torch thread, 2 CPU cores (shared).", "",
                  markdown_table(["epochs", "mAP50-95", "mAP50", "gain over the shorter", "wall"], rows), "",
                  f"Budget by the rule: **{search['budget_epochs']} epochs**"
                  + (" (the longest tried: still improving)" if search["budget_epochs"] == results[-1]["epochs"]
                     and len(results) > 1 and results[-1]["map"] - results[-2]["map"] >= THRESHOLD else "")
                  + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
