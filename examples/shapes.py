"""A deterministic synthetic detection data set: coloured shapes on textured backgrounds.

Five classes (circle, rectangle, triangle, cross, ring) of varied size, aspect, colour and
rotation, partly overlapping, on backgrounds of gradients, stripes and noise, with clutter
(line segments, dots and small blobs) that is not an object. A ring and a circle differ
only by the hole, a cross and a rectangle by the arms, so the classifier has real work.

Every image is drawn from its own generator seeded with (seed, split, index): an image does
not depend on how many others are generated, and the same call gives the same pixels and
boxes on any machine (numpy's PCG64 and PIL's rasteriser are platform-independent).
"""

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

CLASSES = ("circle", "rectangle", "triangle", "cross", "ring")
SPLITS = {"train": 0, "val": 1, "test": 2}  # val: tuning; test: the reported numbers

IMAGE_SIZE = 128
MIN_OBJECT, MAX_OBJECT = 14, 56  # box side in pixels
MAX_OBJECTS = 5
MAX_COVERED = 0.35  # objects overlap, but a later one hides at most this much of an earlier box


def _random_colour(rng):
    # Saturated colours of any hue and value, so colour alone never tells the class.
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.5, 1.0), rng.uniform(0.35, 1.0)
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return tuple(int(255 * c) for c in rgb)


def _background(rng, size):
    """A gradient, oriented stripes and pixel noise: texture the detector must ignore."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-60, 60, size=(2, 3))
    image = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
    angle, period = rng.uniform(0, math.pi), rng.uniform(0.05, 0.3)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period * 2 * math.pi
    image = image + np.sin(phase)[..., None] * rng.uniform(5, 35, size=3)
    image = image + rng.normal(0, rng.uniform(3, 15), size=image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def _clutter(rng, draw, size):
    """Line segments, dots and small blobs: edges and colour that are not objects."""
    for _ in range(rng.integers(3, 12)):
        kind = rng.integers(3)
        x, y = rng.uniform(0, size, size=2)
        colour = _random_colour(rng)
        if kind == 0:
            length, angle = rng.uniform(8, 40), rng.uniform(0, 2 * math.pi)
            end = (x + length * math.cos(angle), y + length * math.sin(angle))
            draw.line([(x, y), end], fill=colour, width=int(rng.integers(1, 3)))
        elif kind == 1:
            r = rng.uniform(1, 3)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        else:  # a blob smaller than any object, irregular so it is no circle
            points = [
                (x + rng.uniform(2, 5) * math.cos(a), y + rng.uniform(2, 5) * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)
            ]
            draw.polygon(points, fill=colour)


def _rotate(points, centre, angle):
    cx, cy = centre
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _draw_shape(rng, draw, cls, box):
    """Draws class ``cls`` inside ``box``; returns its tight box (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    colour = _random_colour(rng)
    name = CLASSES[cls]
    if name == "circle":
        draw.ellipse(box, fill=colour)
    elif name == "ring":
        thickness = rng.uniform(0.18, 0.3) * min(w, h)
        draw.ellipse(box, outline=colour, width=max(2, int(thickness)))
    elif name == "rectangle":
        draw.rectangle(box, fill=colour)
    elif name == "cross":
        arm = rng.uniform(0.25, 0.4)
        draw.rectangle([x1, y1 + h * (0.5 - arm / 2), x2, y1 + h * (0.5 + arm / 2)], fill=colour)
        draw.rectangle([x1 + w * (0.5 - arm / 2), y1, x1 + w * (0.5 + arm / 2), y2], fill=colour)
    else:  # triangle, rotated: its tight box is that of its rotated vertices
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        points = _rotate([(centre[0], y1), (x2, y2), (x1, y2)], centre, rng.uniform(0, 2 * math.pi))
        draw.polygon(points, fill=colour)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return (min(xs), min(ys), max(xs), max(ys))
    return tuple(box)


def _covered_fraction(below, above):
    """The fraction of box ``below`` that box ``above`` covers."""
    ix = max(0.0, min(below[2], above[2]) - max(below[0], above[0]))
    iy = max(0.0, min(below[3], above[3]) - max(below[1], above[1]))
    return ix * iy / ((below[2] - below[0]) * (below[3] - below[1]))


def make_image(seed, split, index, size=IMAGE_SIZE):
    """One image (uint8 (3, size, size)) and its target {"boxes": (n, 4) xyxy, "labels": (n,)}."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    _clutter(rng, draw, size)
    boxes, labels = [], []
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        for _attempt in range(20):  # rejection sampling of a placement that overlaps little
            side = rng.uniform(MIN_OBJECT, MAX_OBJECT)
            aspect = rng.uniform(0.7, 1.4)
            w, h = side * math.sqrt(aspect), side / math.sqrt(aspect)
            x1, y1 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            box = (x1, y1, x1 + w, y1 + h)
            if all(_covered_fraction(other, box) <= MAX_COVERED for other in boxes):
                break
        else:
            continue
        cls = int(rng.integers(len(CLASSES)))
        tight = _draw_shape(rng, draw, cls, box)
        boxes.append(tuple(min(max(v, 0.0), float(size)) for v in tight))
        labels.append(cls)
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    return pixels, target


def make_split(split, count, seed=0, size=IMAGE_SIZE):
    """``count`` images of ``split``: a uint8 tensor (count, 3, size, size) and their targets."""
    pairs = [make_image(seed, split, i, size) for i in range(count)]
    return torch.stack([p for p, _ in pairs]), [t for _, t in pairs]
