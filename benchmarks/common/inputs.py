"""The benchmark's problems: flat scores and labels in a named score regime."""

import re

import torch

DELTA = 1.0
INIT_MEAN, INIT_STD = -4.6, 0.5  # logit(0.01) = -4.595: RetinaNet's prior-initialised bias
POS_MEAN, POS_STD = 2.0, 1.0

REGIMES = {
    "init": f"every score ~ N({INIT_MEAN}, {INIT_STD}): the network at initialisation; every "
    "negative lies within delta of a positive, nothing is pruned (the worst case)",
    "trained": f"positives ~ N({POS_MEAN}, {POS_STD}), the rest ~ N({INIT_MEAN}, {INIT_STD}): "
    "a partly trained network; only negatives above min(positive) - delta count",
}
SCORE_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16, "float64": torch.float64}
LABEL_DTYPES = {"int64": torch.int64, "int32": torch.int32, "int8": torch.int8,
                "uint8": torch.uint8, "bool": torch.bool, "float32": torch.float32}
NO_IGNORE = (torch.bool, torch.uint8)  # label dtypes that cannot hold -1


def make_problem(n, p, regime, *, device, seed, score_dtype=torch.float32,
                 label_dtype=torch.int64, ignore_frac=0.01):
    """Flat scores and labels of length n: exactly p positives at random positions and
    about ignore_frac of the entries ignored (label -1; none for bool and uint8 labels)."""
    if p > n:
        raise ValueError(f"P = {p} positives do not fit in N = {n} entries")
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}")
    gen = torch.Generator(device=device).manual_seed(seed)
    scores = torch.randn(n, generator=gen, device=device).mul_(INIT_STD).add_(INIT_MEAN)
    labels = torch.zeros(n, dtype=torch.int64, device=device)
    if ignore_frac > 0 and label_dtype not in NO_IGNORE:
        labels.masked_fill_(torch.rand(n, generator=gen, device=device) < ignore_frac, -1)
    positives = torch.randperm(n, generator=gen, device=device)[:p]
    labels[positives] = 1
    if regime == "trained":
        scores[positives] = torch.randn(p, generator=gen, device=device) * POS_STD + POS_MEAN
    return scores.to(score_dtype), labels.to(label_dtype)


def relevant_fraction(scores, labels, delta=DELTA):
    """Fraction of the negatives above min(positive) - delta: those the loss cannot prune."""
    y = labels.to(torch.int8)
    positives, negatives = scores[y == 1], scores[y == 0]
    if positives.numel() == 0 or negatives.numel() == 0:
        return 0.0
    return float((negatives > positives.min() - delta).double().mean())


def parse_count(text):
    """'4M' -> 4_000_000; also 1e6, 98.2M, 64k, 2G, 65536."""
    match = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)([kKmMgG]?)", text.strip().replace("_", ""))
    if not match:
        raise ValueError(f"not a count: {text!r} (use e.g. 4000000, 4e6, 4M, 64k)")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    if not value >= 1:
        raise ValueError(f"a count must be >= 1: {text!r}")
    return int(round(value))


def parse_counts(text):
    """'1M,4M' -> [1_000_000, 4_000_000]; 'none' -> []."""
    if text.strip().lower() in ("", "none", "off"):
        return []
    return [parse_count(x) for x in text.split(",") if x.strip()]


def positives_for(n, rule):
    """P at N for the N sweep's rule: 'N/1000' (P grows with N) or a fixed count."""
    match = re.fullmatch(r"\s*N\s*/\s*(\S+)\s*", rule)
    p = n / parse_count(match.group(1)) if match else parse_count(rule)
    return min(n, max(1, int(round(p))))


def make_copies(n, p, regime, *, seed, count=2, **options):
    """count independent problems of one size, scores requiring grad, for the timed calls
    to rotate through (common.timing.rotating); options as make_problem's."""
    copies = []
    for c in range(count):
        scores, labels = make_problem(n, p, regime, seed=seed * count + c, **options)
        copies.append((scores.requires_grad_(), labels))
    return copies
