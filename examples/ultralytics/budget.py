"""The training budget: the number of epochs after which YOLO's BCE stops improving.

    python examples/ultralytics/budget.py --epochs 20 40 60

Trains YOLO's default loss (BCE) at YOLO's own rate for 5 classes (AdamW 0.00111), seed
99, a complete schedule per budget (warm-up, linear decay to the end, mosaic closed for
the last 10 epochs), and scores each on the val split. The budget is the shortest whose
next longer one gains less than THRESHOLD mAP50-95. A budget whose result is already in
results/budget/ is not rerun. Writes results/budget.json and results/budget.md.
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


def run(epochs):
    out = os.path.join(RESULTS, "budget", f"bce_{epochs}ep")
    path = os.path.join(out, "result.json")
    if not os.path.exists(path):
        train_yolo.train(train_yolo.parse_args(
            ["--loss", "bce", "--seed", str(SEED), "--epochs", str(epochs), "--eval-split", "val",
             "--out", out]
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
    args = p.parse_args(argv)
    results = [run(e) for e in sorted(args.epochs)]
    budget = choose(results)
    command = "python examples/ultralytics/budget.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine()
    with open(os.path.join(RESULTS, "budget.json"), "w") as f:
        json.dump({"budget_epochs": budget, "threshold": THRESHOLD, "runs": results,
                   "command": command, "machine": info}, f, indent=1)
    rows = [[r["epochs"], f"{r['map']:.3f}", f"{r['map_50']:.3f}",
             "" if i == 0 else f"{r['map'] - results[i - 1]['map']:+.3f}",
             f"{r['wall_seconds'] / 60:.1f} min"] for i, r in enumerate(results)]
    text = "\n".join([
        "# The training budget: where YOLO's BCE stops improving", "",
        f"Command: `{command}`  ",
        f"Commit {info['commit']}, ultralytics {info['ultralytics']}, torch {info['torch']}, one torch "
        "thread, 2 CPU cores (shared).", "",
        f"BCE at YOLO's own rate (AdamW {train_yolo.YOLO_AUTO_LR:g}), seed {SEED}, one complete "
        "schedule per budget; mAP of the last weights on the val split:", "",
        markdown_table(["epochs", "mAP50-95", "mAP50", "gain over the shorter", "wall"], rows), "",
        f"Budget: **{budget} epochs**, the shortest whose next longer budget gains less than "
        f"{THRESHOLD:g} mAP50-95.", "",
    ])
    with open(os.path.join(RESULTS, "budget.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
