"""The learning-rate (both losses) and delta (AP-loss) search behind the defaults.

    python examples/tune.py               # about 40 minutes on 2 CPU cores

Every configuration trains with seed 99 (not one of compare.py's seeds) and is scored on
the val split, so the test split that compare.py reports stays unseen. A configuration
whose result.json already exists under examples/results/tuning/ is not rerun. Writes
examples/results/tuning.json and tuning.md.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import train_retinanet  # noqa: E402

SEED = 99
LRS = (0.01, 0.02, 0.04, 0.08)  # extended by doubling or halving while the best is at an edge
MAX_EXTENSIONS = 3
AP_DELTAS = (0.5, 2.0)  # tried at AP-loss's best learning rate; the paper's default is 1


def run_name(loss, lr, delta):
    return f"{loss}_lr{lr:g}" + (f"_delta{delta:g}" if delta != 1.0 else "")


def run(loss, lr, delta=1.0):
    out = os.path.join(HERE, "results", "tuning", run_name(loss, lr, delta))
    path = os.path.join(out, "result.json")
    if not os.path.exists(path):
        args = train_retinanet.parse_args(
            ["--loss", loss, "--lr", str(lr), "--delta", str(delta), "--seed", str(SEED),
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


def main():
    results = search_lr("focal") + search_lr("ap")
    best_ap = best([r for r in results if r["loss"] == "ap"])
    results += [run("ap", best_ap["lr"], delta) for delta in AP_DELTAS]
    with open(os.path.join(HERE, "results", "tuning.json"), "w") as f:
        json.dump(results, f, indent=1)
    lines = [
        "# Tuning (val split, seed 99)",
        "",
        "`python examples/tune.py`: every other setting as in compare.md. Best per loss in bold.",
        "",
        "| loss | lr | delta | val mAP@[.5:.95] | val mAP@.5 |",
        "|---|---|---|---|---|",
    ]
    winners = {id(best([r for r in results if r["loss"] == loss])) for loss in ("focal", "ap")}
    for r in results:
        if r["map"] is None:
            cells = f"diverged: {r['error']} | |"
        else:
            cells = f"{r['map']:.3f} | {r['map_50']:.3f} |"
            if id(r) in winners:
                cells = f"**{r['map']:.3f}** | **{r['map_50']:.3f}** |"
        delta = f"{r['delta']:g}" if r["loss"] == "ap" else "-"
        lines.append(f"| {r['loss']} | {r['lr']:g} | {delta} | {cells}")
    with open(os.path.join(HERE, "results", "tuning.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
