"""scripts/gpu_check.sh names test ids for its compute-sanitizer runs; a GPU is rarely
lent, so a stale id would only show there. Each id must exist here, its `cuda` device
parametrization read as the `cpu` one (the cuda target exists only with a GPU)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sanitizer_test_ids():
    with open(os.path.join(ROOT, "scripts", "gpu_check.sh")) as f:
        block = re.search(r"SANITIZER_TESTS=\((.*?)\n\)", f.read(), re.S).group(1)
    return re.findall(r'"([^"]+)"', block)


def test_sanitizer_test_ids_exist():
    ids = sanitizer_test_ids()
    assert len(ids) >= 5
    # -P: the installed package, not the source tree in the working directory.
    as_collected_here = [re.sub(r"(?<=[-\[])cuda\]$", "cpu]", i) for i in ids]
    result = subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *as_collected_here],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
