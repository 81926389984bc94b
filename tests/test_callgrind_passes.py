"""scripts/callgrind_passes.py and callgrind_call.py: instructions per entry of each CPU pass
and per call of each loss under callgrind, on the installed build, small enough for CI
(about half a minute each)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "callgrind_passes.py")


@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("cc") is None,
                    reason="needs valgrind and a C compiler")
def test_counts_each_pass_per_entry(tmp_path):
    out = tmp_path / "counts.json"
    # From outside the checkout, so that the installed package is measured.
    run = subprocess.run([sys.executable, SCRIPT, "--n", "20k", "--labels", "int8", "--json",
                          str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Instructions per entry" in run.stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["labels"], row["n"], row["p"]) == ("int8", 20000, 20)
    per_entry = {k: row[k] / row["n"] for k in ("gather", "pass1", "pass1_no_index_build",
                                                 "pass2")}
    # The stages' instructions per entry (about 6, 33 and 25 with AVX2 lanes; the scalar
    # path about twice that): a count of the wrong calls would be far off.
    assert 1 < per_entry["gather"] < 30, per_entry
    assert 10 < per_entry["pass1_no_index_build"] <= per_entry["pass1"] < 150, per_entry
    assert 10 < per_entry["pass2"] < 150, per_entry
    # The index is built in the first pass 1 only: reused by the second and by pass 2.
    assert row["index_build"] > 0
    assert row["index_in_pass1_cached"] == 0 and row["index_in_pass2"] == 0


@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("cc") is None,
                    reason="needs valgrind and a C compiler")
def test_counts_each_call(tmp_path):
    """scripts/callgrind_call.py: instructions per call of each loss at N = 1,000."""
    script = os.path.join(ROOT, "scripts", "callgrind_call.py")
    run = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = {}
    for line in run.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[1].replace(",", "").isdigit():
            rows[cells[0]] = int(cells[1].replace(",", ""))
    assert set(rows) == {"ap_loss", "rank_sort_loss", "alrp_loss", "ap_loss, no_grad"}, run.stdout
    # About 350k per forward + backward and 170k per forward: a count of the wrong region
    # (the whole process, or nothing) would be far off.
    assert all(100_000 < rows[p] < 3_000_000 for p in ("ap_loss", "rank_sort_loss", "alrp_loss"))
    assert 30_000 < rows["ap_loss, no_grad"] < rows["ap_loss"]
