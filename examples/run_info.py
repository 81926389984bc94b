"""What a results file should say about where it was measured."""

import os
import platform
import subprocess

import torch
import torchvision


def _git(*args):
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run_info():
    # Dirty only counts the files these results depend on (the other files may be edited).
    dirty = _git("status", "--porcelain", "--", "aploss_cuda", "examples", ":!examples/results")
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(dirty) if dirty is not None else None,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "load_average_1m": os.getloadavg()[0],
    }
