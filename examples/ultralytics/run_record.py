"""Names, the machine and table formatting shared by tune.py and compare.py."""

import os
import platform
import subprocess

LOSS_NAMES = {"bce": "BCE (YOLO's default)", "rs": "Rank & Sort", "ap": "AP-loss", "alrp": "aLRP"}


def _git(*args):
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine():
    """The commit, versions, cores and load that a results file records."""
    import torch
    import ultralytics

    dirty = _git("status", "--porcelain", "--", "aploss_cuda", "examples/ultralytics",
                 ":!examples/ultralytics/results")
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(dirty) if dirty is not None else None,
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0],
    }


def markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])
