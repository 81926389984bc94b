"""The learning-rate (every loss) and delta (ranking losses) search behind the defaults.

    python examples/tune.py                      # focal and AP-loss: about 40 minutes on 2 CPU cores
    python examples/tune.py --losses rs alrp     # RS and aLRP loss only

Every configuration trains with seed 99 (not one of compare.py's seeds) and is scored on
the val split, so the test split that compare.py reports stays unseen. A configuration
whose result.json already exists under examples/results/tuning/ is not rerun. Writes
examples/results/tuning.json and tuning.md: the rows of the losses searched, and those of
the other losses as the previous tuning.json had them.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import train_retinanet  # noqa: E402
from model import DEFAULT_DELTA, LOSSES  # noqa: E402

SEED = 99
LRS = (0.01, 0.02, 0.04, 0.08)  # extended by doubling or halving while the best is at an edge
MAX_EXTENSIONS = 3
# Tried at each ranking loss's best learning rate, besides its paper's default DEFAULT_DELTA.
OTHER_DELTAS = {"ap": (0.5, 2.0), "rs": (0.25, 1.0), "alrp": (0.5, 2.0)}
TUNING_JSON = os.path.join(HERE, "results", "tuning.json")


def run_name(loss, lr, delta):
    default = DEFAULT_DELTA.get(loss)
    return f"{loss}_lr{lr:g}" + (f"_delta{delta:g}" if delta != default else "")


def run(loss, lr, delta=None):
    delta = DEFAULT_DELTA.get(loss) if delta is None else delta
    out = os.path.join(HERE, "results", "tuning", run_name(loss, lr, delta))
    path = os.path.join(out, "result.json")
    if not os.path.exists(path):
        delta_args = ["--delta", str(delta)] if delta is not None else []
        args = train_retinanet.parse_args(
            ["--loss", loss, "--lr", str(lr), *delta_args, "--seed", str(SEED),
             "--eval-split", "val", "--out", out, "--no-progress"]
        )
        try:
            train_retinanet.train(args)
        except FloatingPointError as error:  # a diverged run is a result too
            os.makedirs(out, exist_ok=True)
            with open(path, "w") as f:
                json.dump({"loss": loss, "lr": lr, "delta": delta, "map": None,
                           "map_50": None, "error": str(error)}, f)
    with open(path) as f:
        return json.load(f)


def best(results):
    scored = [r for r in results if r["map"] is not None]
    return max(scored, key=lambda r: r["map"])


def search_lr(loss):
    """The LRS grid for ``loss``, extended past an edge that holds the best result."""
    results = [run(loss, lr) for lr in LRS]
    for _ in range(MAX_EXTENSIONS):
        lrs = [r["lr"] for r in results]
        top = best(results)["lr"]
        if top == max(lrs):
            results.append(run(loss, max(lrs) * 2))
        elif top == min(lrs):
            results.insert(0, run(loss, min(lrs) / 2))
        else:
            break
    return results


def search(loss, lr_only=False):
    """The learning-rate search of ``loss``, then (unless lr_only) its other deltas at the
    best rate."""
    results = search_lr(loss)
    if lr_only:
        return results
    top = best(results)["lr"]
    return results + [run(loss, top, delta) for delta in OTHER_DELTAS.get(loss, ())]


def previous_results(losses):
    """The rows of the other losses in the existing tuning.json (none if there is none)."""
    if not os.path.exists(TUNING_JSON):
        return []
    with open(TUNING_JSON) as f:
        return [r for r in json.load(f) if r["loss"] not in losses]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--losses", nargs="+", choices=LOSSES, default=["focal", "ap"])
    p.add_argument("--lr-only", action="store_true",
                   help="search the learning rate only, at each loss's default delta")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    losses = args.losses
    results = previous_results(losses) + [
        r for loss in losses for r in search(loss, args.lr_only)
    ]
    results.sort(key=lambda r: LOSSES.index(r["loss"]))  # stable: each loss's order kept
    with open(TUNING_JSON, "w") as f:
        json.dump(results, f, indent=1)
    lines = [
        "# Tuning (val split, seed 99)",
        "",
        "`python examples/tune.py` (focal, ap), `python examples/tune.py --losses rs alrp "
        "--lr-only` (rs, alrp): every other setting as in compare.md (1500 iterations). "
        "Best per loss in bold.",
        "",
        "| loss | lr | delta | val mAP@[.5:.95] | val mAP@.5 |",
        "|---|---|---|---|---|",
    ]
    present = [loss for loss in LOSSES if any(r["loss"] == loss for r in results)]
    winners = {id(best([r for r in results if r["loss"] == loss])) for loss in present}
    for r in results:
        if r["map"] is None:
            cells = f"diverged: {r['error']} | |"
        else:
            cells = f"{r['map']:.3f} | {r['map_50']:.3f} |"
            if id(r) in winners:
                cells = f"**{r['map']:.3f}** | **{r['map_50']:.3f}** |"
        delta = f"{r['delta']:g}" if r["loss"] != "focal" and r.get("delta") is not None else "-"
        lines.append(f"| {r['loss']} | {r['lr']:g} | {delta} | {cells}")
    with open(os.path.join(HERE, "results", "tuning.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
