"""Train YOLOv8n from scratch on the synthetic shapes with YOLO's BCE or a ranking loss.

    python examples/ultralytics/train_yolo.py --loss rs --seed 0 --lr 0.002   # one run, test mAP
    python examples/ultralytics/train_yolo.py --loss bce --epochs 60 --eval-split val

The model is ``yolov8n.yaml`` built from scratch (no weights downloaded); the data set is
``yolo_data.py``'s, written to ``--data`` once. Training goes through
``YOLO(...).train(trainer=...)``: YOLO's own ``DetectionTrainer`` for ``bce``, the
integration's ``RankSortTrainer``, ``APLossTrainer`` or ``ALRPTrainer`` otherwise; every
other setting is the same for every loss. After training, Ultralytics' own validator
scores the last weights on ``--eval-split`` (mAP50-95 and mAP50). The per-epoch val curve
is Ultralytics' ``results.csv``. Writes ``result.json`` to ``--out``; Ultralytics' own
run folder (weights, results.csv) goes to ``--work``.

Settings (the same for every loss): 128 px, batch 16 with one optimizer step per batch
(``nbs=16``), AdamW at ``--lr`` (YOLO's own choice of optimizer for short runs; its
default rate for 5 classes is 0.002 x 5 / (4 + 5) = 0.00111), YOLO's default schedule
(3 warm-up epochs, linear decay to lrf = 0.01) and augmentation (mosaic closed for the
last 10 epochs), one thread, no dataloader workers. Validation keeps every score
(``conf=0``): ranking losses order the logits without calibrating them, and a threshold
(YOLO's val default is 0.001) could drop a ranking model's detections.
"""

import argparse
import csv
import json
import os
import shutil
import sys
import time

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network at all

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from yolo_data import write_yolo_dataset  # noqa: E402

LOSSES = ("bce", "rs", "ap", "alrp")
TRAINERS = {"rs": "RankSortTrainer", "ap": "APLossTrainer", "alrp": "ALRPTrainer"}
YOLO_AUTO_LR = round(0.002 * 5 / (4 + 5), 6)  # what optimizer="auto" picks for 5 classes
DEFAULT_EPOCHS = 30
DEFAULT_DATA = os.path.join("/tmp", "aploss_shapes_yolo")
DEFAULT_WORK = os.path.join("/tmp", "aploss_yolo_runs")
IMAGE_SIZE = 128
BATCH = 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loss", choices=LOSSES, required=True)
    p.add_argument("--seed", type=int, default=0, help="model init, batch order, augmentation")
    p.add_argument("--lr", type=float, default=YOLO_AUTO_LR, help="AdamW lr0 (default: YOLO's own)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--eval-split", choices=("val", "test"), default="test")
    p.add_argument("--data", default=DEFAULT_DATA, help="where the YOLO-format data set is written")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="result.json's folder; default: <work>/<loss>_seed<S>")
    p.add_argument("--work", default=DEFAULT_WORK, help="Ultralytics' run folders (not committed)")
    return p.parse_args(argv)


def trainer_class(loss):
    if loss == "bce":
        from ultralytics.models.yolo.detect import DetectionTrainer

        return DetectionTrainer
    import aploss_cuda.integrations.ultralytics as integration

    return getattr(integration, TRAINERS[loss])


def val_curve(results_csv):
    """The val mAP50-95 after every epoch, from Ultralytics' results.csv."""
    with open(results_csv) as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    return [float(row["metrics/mAP50-95(B)"]) for row in rows]


def train(args):
    from ultralytics import YOLO

    torch.set_num_threads(args.threads)
    lr = args.lr
    name = f"{args.loss}_lr{lr:g}_seed{args.seed}_{args.epochs}ep_{args.eval_split}"
    out = args.out or os.path.join(args.work, name)
    os.makedirs(out, exist_ok=True)
    data = write_yolo_dataset(args.data)
    settings = dict(
        data=data, epochs=args.epochs, imgsz=IMAGE_SIZE, batch=BATCH,
        nbs=BATCH,  # one optimizer step per batch: 32 batches an epoch on 512 images
        optimizer="AdamW", lr0=lr, seed=args.seed, deterministic=True, workers=0,
        device="cpu", amp=False, plots=False, verbose=False,
        conf=0.0,  # ranking losses order the logits without calibrating them: keep every score
        project=args.work, name=name, exist_ok=True,
    )
    shutil.rmtree(os.path.join(args.work, name), ignore_errors=True)  # results.csv appends
    start = time.perf_counter()
    model = YOLO("yolov8n.yaml")
    model.train(trainer=trainer_class(args.loss), **settings)
    train_seconds = time.perf_counter() - start
    save_dir = str(model.trainer.save_dir)
    last = os.path.join(save_dir, "weights", "last.pt")
    metrics = YOLO(last).val(
        data=data, split=args.eval_split, imgsz=IMAGE_SIZE, batch=32, conf=0.0, device="cpu",
        plots=False, verbose=False, project=args.work, name=name + "_eval", exist_ok=True,
    )
    result = {
        "loss": args.loss, "seed": args.seed, "lr": lr, "epochs": args.epochs,
        "eval_split": args.eval_split, "map": float(metrics.box.map),
        "map_50": float(metrics.box.map50), "val_curve": val_curve(os.path.join(save_dir, "results.csv")),
        "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(), "settings": {k: v for k, v in settings.items() if k != "data"},
    }
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def main(argv=None):
    result = train(parse_args(argv))
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}))


if __name__ == "__main__":
    main()
