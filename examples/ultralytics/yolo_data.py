"""The synthetic shapes of ``examples/shapes.py`` written as a YOLO-format data set.

    python examples/ultralytics/yolo_data.py /tmp/shapes_yolo     # 512 / 128 / 128 images

Layout (what Ultralytics reads): ``images/{train,val,test}/NNNNN.png``, one
``labels/<split>/NNNNN.txt`` per image with a line ``class cx cy w h`` per object
(normalised to [0, 1]), and ``data.yaml`` naming the splits and the five classes. Every
image is ``shapes.make_image(data_seed, split, index)``: the same pixels and boxes as the
RetinaNet example's, generated, never downloaded. A folder that already holds the same
data set (same counts, seed and size, recorded in ``data.yaml``) is reused as it is.
"""

import argparse
import os
import sys

from PIL import Image

EXAMPLES = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, EXAMPLES)

import shapes  # noqa: E402

DEFAULT_COUNTS = {"train": 512, "val": 128, "test": 128}


def yolo_label_lines(target, size):
    """One ``class cx cy w h`` line per box of ``target`` (xyxy pixels in a size x size image)."""
    lines = []
    for (x1, y1, x2, y2), cls in zip(target["boxes"].tolist(), target["labels"].tolist()):
        cx, cy = (x1 + x2) / 2 / size, (y1 + y2) / 2 / size
        w, h = (x2 - x1) / size, (y2 - y1) / size
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def data_yaml(root, counts, data_seed, size):
    # The generator's settings ride along as comments: they decide whether a folder is reused.
    lines = [
        f"# shapes: data_seed={data_seed} size={size} "
        + " ".join(f"{split}={count}" for split, count in counts.items()),
        f"path: {os.path.abspath(root)}",
        *(f"{split}: images/{split}" for split in counts),
        "names:",
        *(f"  {i}: {name}" for i, name in enumerate(shapes.CLASSES)),
    ]
    return "\n".join(lines) + "\n"


def write_yolo_dataset(root, counts=None, data_seed=0, size=shapes.IMAGE_SIZE):
    """Writes the data set under ``root`` (unless it is already there); returns data.yaml's path."""
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    yaml_path = os.path.join(root, "data.yaml")
    text = data_yaml(root, counts, data_seed, size)
    if os.path.exists(yaml_path):
        with open(yaml_path) as f:
            if f.read() == text:
                return yaml_path
    for split, count in counts.items():
        image_dir = os.path.join(root, "images", split)
        label_dir = os.path.join(root, "labels", split)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        for index in range(count):
            pixels, target = shapes.make_image(data_seed, split, index, size)
            Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(
                os.path.join(image_dir, f"{index:05d}.png")
            )
            with open(os.path.join(label_dir, f"{index:05d}.txt"), "w") as f:
                f.write("".join(line + "\n" for line in yolo_label_lines(target, size)))
    with open(yaml_path, "w") as f:  # last: a folder with data.yaml is complete
        f.write(text)
    return yaml_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root")
    p.add_argument("--data-seed", type=int, default=0)
    for split, count in DEFAULT_COUNTS.items():
        p.add_argument(f"--{split}", type=int, default=count, help=f"{split} images")
    args = p.parse_args(argv)
    counts = {split: getattr(args, split) for split in DEFAULT_COUNTS}
    print(write_yolo_dataset(args.root, counts, args.data_seed))


if __name__ == "__main__":
    main()
