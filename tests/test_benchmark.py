"""benchmarks/run.py: the --quick run end to end, and the correctness of the baselines
it times (the per-positive loop and the dense vectorization) against the reference."""

import json
import os
import subprocess
import sys

import pytest
import torch

from aploss_cuda.reference import ap_loss_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCH)

from baselines import dense_vectorized, per_positive_loop  # noqa: E402


def _problem(n, p, n_ign, seed, *, dtype=torch.float64, ties=False, trained=False):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, generator=g, dtype=torch.float64)
    perm = torch.randperm(n, generator=g)
    y = torch.zeros(n, dtype=torch.int64)
    y[perm[p : p + n_ign]] = -1
    y[perm[:p]] = 1
    if trained:
        s[perm[:p]] += 2.5
    if ties:
        s = torch.round(s * 4) / 4  # many exact ties, among positives and across labels
    return s.to(dtype), y


CASES = [
    dict(n=500, p=1, n_ign=10, seed=0),
    dict(n=800, p=37, n_ign=40, seed=1),
    dict(n=800, p=37, n_ign=40, seed=2, ties=True),
    dict(n=1500, p=120, n_ign=0, seed=3, ties=True),
    dict(n=1200, p=60, n_ign=100, seed=4, trained=True),
    dict(n=300, p=300, n_ign=0, seed=5),  # no negatives
    dict(n=300, p=0, n_ign=30, seed=6),  # no positives
]
BASELINES = {
    "loop": per_positive_loop,
    "dense": dense_vectorized,
    "dense_small_tiles": lambda s, y, d, i: dense_vectorized(s, y, d, i, chunk_elems=1000),
}


@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"n{c['n']}-p{c['p']}-s{c['seed']}")
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_matches_reference(name, case, interpolate):
    delta = 0.7 if case["seed"] % 2 else 1.0
    s, y = _problem(**case)
    ref_loss, ref_grad = ap_loss_reference(s, y, delta, interpolate)
    x = s.clone().requires_grad_(True)
    loss = BASELINES[name](x, y, delta, interpolate)
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert torch.all(x.grad[y == -1] == 0)
    # the error-driven gradient's invariant: negatives sum to loss, positives to -loss
    if case["p"] and (y == 0).any():
        torch.testing.assert_close(x.grad[y == 0].sum(), ref_loss, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(x.grad[y == 1].sum(), -ref_loss, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["loop", "dense"])
def test_baseline_float32_and_shapes(name):
    s, y = _problem(2000, 50, 30, 7, dtype=torch.float32)
    s, y = s.reshape(40, 50), y.reshape(40, 50).to(torch.int8)
    ref_loss, ref_grad = ap_loss_reference(s, y, 1.0, True)
    x = s.clone().requires_grad_(True)
    loss = BASELINES[name](x, y, 1.0, True)
    (2.0 * loss).backward()  # grad_output scales the gradient
    assert x.grad.shape == s.shape and x.grad.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), 2.0 * ref_grad, rtol=1e-4, atol=1e-7)


def test_count_parsing():
    import run

    assert run.parse_list("1e6,4M,64k,98.2M,65536") == [1_000_000, 4_000_000, 64_000, 98_200_000, 65536]
    assert run.parse_list("none") == []
    assert run.parse_nsweep_p("N/1000") == ("ratio", 1e-3)
    assert run.parse_nsweep_p("2000") == ("fixed", 2000)


def test_quick_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    js = [p for p in tmp_path.glob("*.json") if not p.stem.endswith("-distributed")]
    md = [p for p in tmp_path.glob("*.md") if not p.stem.endswith("-distributed")]
    assert len(js) == 1 and len(md) == 1, os.listdir(tmp_path)
    if not torch.cuda.is_available():  # the distributed section (CPU runs) writes its own pair
        distributed = json.loads(next(tmp_path.glob("*-distributed.json")).read_text())
        assert [r["n"] for r in distributed["rows"]] == [20_000, 200_000]
        assert all(
            r["bytes_per_rank_total"] < r["n_sized_alternative_bytes"] for r in distributed["rows"]
        )
    result = json.loads(js[0].read_text())
    assert result["points"], "no measured points"
    names = {r["impl"] for pt in result["points"] for r in pt["rows"]}
    assert {"loop", "dense", "sorted", "pairwise", "focal", "reference"} <= names
    for pt in result["points"]:
        by = {r["impl"]: r for r in pt["rows"]}
        assert by["sorted"]["fwd_bwd"]["status"] == "measured"
        assert by["sorted"]["fwd_bwd"]["median_s"] > 0
        # our kernel agrees with the ground truth of the point
        assert by["sorted"]["err_grad"] is not None and by["sorted"]["err_grad"] < 1e-5
        for r in pt["rows"]:
            assert r["fwd_bwd"]["status"] in ("measured", "skipped", "unavailable")
            if r["fwd_bwd"]["status"] == "skipped":
                assert r["fwd_bwd"]["est_s"] > 0
    text = md[0].read_text()
    assert "| ours sorted (CPU)" in text or "| ours sorted (CUDA)" in text
    assert "fwd+bwd" in proc.stdout and "ours sorted" in proc.stdout
    # the default run includes the grouped section
    _check_grouped(result, text)


GROUPED_NAMES = ["ungrouped", "per-image", "per-class", "retrieval", "retrieval-big-ids"]


def _check_grouped(result, markdown):
    gr = result["grouped"]
    assert gr["points"]
    for pt in gr["points"]:
        by = {e["name"]: e for e in pt["entries"]}
        assert sorted(by) == sorted(GROUPED_NAMES)
        assert by["ungrouped"]["ratio_vs_ungrouped"] == 1.0
        for name in GROUPED_NAMES:
            e = by[name]
            assert e["grouped_median_s"] > 0 and len(e["grouped_samples"]) == pt["rounds"]
            assert e["ratio_vs_ungrouped"] > 0
            if name == "ungrouped":
                continue
            assert e["loop_median_s"] > 0 and e["speedup_vs_loop"] > 0
            assert 1 <= e["groups_with_positive"] <= e["groups"]
            # the grouped call agrees with the loop of ungrouped calls (float32 scores)
            assert e["err_loss_vs_loop"] < 1e-5 and e["err_grad_vs_loop"] < 1e-6
        # the same scores and labels: the per-class and per-image views' groupings
        assert by["per-class"]["groups"] == 80 and by["retrieval"]["groups"] <= 4096
        assert by["retrieval"]["loss"] == by["retrieval-big-ids"]["loss"]
    assert "(c) " in markdown and "grouped fwd+bwd / ungrouped" in markdown
    assert "## Grouped vs ungrouped (group_ids)" in markdown
    assert "| per class, 80 groups |" in markdown


def test_grouped_section_only(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--section", "grouped", "--quick",
         "--grouped-sizes", "40k,64000", "--grouped-rounds", "2", "--no-progress",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    js = list(tmp_path.glob("*-grouped.json"))
    md = list(tmp_path.glob("*-grouped.md"))
    assert len(js) == 1 and len(md) == 1, os.listdir(tmp_path)
    result = json.loads(js[0].read_text())
    assert result["points"] == [] and result["meta"]["section"] == "grouped"
    assert [pt["n"] for pt in result["grouped"]["points"]] == [40_000, 64_000]
    assert [pt["p"] for pt in result["grouped"]["points"]] == [40, 64]
    # 40k is not a multiple of B*C = 1280: per-image ids (B, 1); 64000 is: (B, 1, 1)
    shapes = [{e["name"]: e["group_ids_shape"] for e in pt["entries"]} for pt in result["grouped"]["points"]]
    assert shapes[0]["per-image"] == [16, 1] and shapes[1]["per-image"] == [16, 1, 1]
    assert shapes[0]["per-class"] == [80] and shapes[0]["retrieval"] == [40_000]
    assert result["headline"]["c"]["n"] == 64_000
    _check_grouped(result, md[0].read_text())
    assert "Grouped vs ungrouped" in proc.stdout and "ours sorted" not in proc.stdout
