"""benchmarks/: the quick run end to end (with and without its optional packages), the
correctness of the baselines it times against the reference, and the pieces of
benchmarks/common that the numbers rest on (interleaving, peak memory, collective bytes)."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.distributed as dist

from aploss_cuda.reference import ap_loss_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCH)

import bench_family  # noqa: E402
from baselines import alrp_loop, dense_vectorized, per_positive_loop, rank_sort_loop  # noqa: E402
from common.collectives import INPUT_ARGUMENT as COLLECTIVE_OPS  # noqa: E402
from common.inputs import parse_counts, positives_for  # noqa: E402
from common.memory import PeakMemory  # noqa: E402
from common.progress import Progress  # noqa: E402
from common.timing import interleaved  # noqa: E402


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
    assert parse_counts("1e6,4M,64k,98.2M,65536") == [10**6, 4 * 10**6, 64_000, 98_200_000, 65536]
    assert parse_counts("none") == []
    assert positives_for(4_000_000, "N/1000") == 4000 and positives_for(500, "N/1000") == 1
    assert positives_for(4_000_000, "2000") == 2000 and positives_for(100, "2000") == 100


def test_rounds_interleave_and_the_budget_stops_a_slow_implementation():
    order = []
    thunks = {"fast": lambda: order.append("fast"),
              "slow": lambda: (order.append("slow"), time.sleep(0.02))}
    first = {"fast": 0.01, "slow": 0.02}
    samples = interleaved(thunks, first, rounds=4, round_s=0.01, budget_s=0.03)
    assert len(samples["fast"]) == 4
    assert len(samples["slow"]) == 1 and samples["slow"][0] >= 0.02  # one sample, then over budget
    assert order[:3] == ["fast", "slow", "fast"]


def test_peak_memory_counts_a_touched_allocation():
    meter = PeakMemory("cpu")
    if not meter.available:
        pytest.skip(meter.method)
    meter.start()
    x = torch.ones(16 * 2**20)  # 64 MiB, written
    extra = meter.stop()
    del x
    assert 60 * 2**20 <= extra < 200 * 2**20


def _run(args, tmp_path, env=None):
    command = [sys.executable, os.path.join(BENCH, "run.py"), *args, "--out", str(tmp_path)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _without(tmp_path, *packages):
    """An environment in which importing each of packages raises ImportError."""
    for name in packages:
        (tmp_path / "blocked" / name).mkdir(parents=True)
        (tmp_path / "blocked" / name / "__init__.py").write_text(f"raise ImportError('{name}')\n")
    path = [str(tmp_path / "blocked")] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


TINY = ["--quick", "--sizes", "20k,40k", "--positives", "20", "--psweep-n", "20k",
        "--grouped-sizes", "25600", "--family-sizes", "20k", "--family-positives", "20,200",
        "--family-psweep-n", "10k", "--distributed-sizes", "20k", "--fixed-sizes", "1k",
        "--yolo-images", "1", "--yolo-positives", "50", "--rounds", "2"]
FAMILY = ["rank_sort", "rank_sort-loop", "alrp", "alrp-loop", "focal", "ap"]
GROUPED = ["ungrouped", "per-image-8", "per-image-16", "per-class", "per-query", "retrieval",
           "retrieval-big-ids"]
YOLO = ["bce", "rank_sort", "ap", "alrp", "rank_sort-image", "ap-image", "alrp-image"]


def test_quick_run_without_matplotlib_and_tqdm(tmp_path):
    out = tmp_path / "out"
    proc = _run(TINY, out, env=_without(tmp_path, "matplotlib", "tqdm"))
    assert "matplotlib is not installed: no plots" in proc.stderr
    assert "tqdm is not installed: no progress bar" in proc.stderr
    assert not list(out.glob("*.png"))
    (js,), (md,) = list(out.glob("*.json")), list(out.glob("*.md"))
    result, text = json.loads(js.read_text()), md.read_text()
    assert js.stem == md.stem and js.stem.endswith("-quick")
    assert text.strip() in proc.stdout

    points = result["sweeps"]["points"]
    assert {(pt["regime"], pt["n"], pt["p"]) for pt in points} == {
        (r, n, n // 1000) for r in ("init", "trained") for n in (20_000, 40_000)}
    for pt in points:
        impls = pt["impls"]
        assert list(impls) == ["sorted", "pairwise", "focal", "focal-unmasked", "dense", "loop",
                               "reference"]
        assert pt["truth"] == "reference (float64)"
        for name, row in impls.items():
            assert row["status"] in ("measured", "not run"), row
            # measured numbers only: a cell without a measurement has no time at all
            assert (row["status"] == "measured") == ("median_s" in row)
            if "median_s" in row:
                assert row["median_s"] > 0 and 1 <= len(row["samples"]) <= 2
        assert impls["sorted"]["status"] == impls["focal"]["status"] == "measured"
        for name in ("sorted", "pairwise", "dense", "loop"):
            if impls[name]["status"] == "measured":
                assert impls[name]["err_grad"] < 1e-6 and impls[name]["err_loss"] < 1e-5
    assert "| regime | N | P | ap_loss fwd+bwd | focal loss fwd+bwd | ratio |" in text
    # nothing approximate in a table: no extrapolated cell
    assert not [line for line in text.splitlines() if line.startswith("|") and "~" in line]

    (gpt,) = result["grouped"]["points"]
    by = {e["name"]: e for e in gpt["entries"]}
    assert list(by) == GROUPED and by["ungrouped"]["ratio_vs_ungrouped"] == 1.0
    assert by["per-image-8"]["group_ids"] == "(8, 1, 1) int64"
    assert by["per-image-16"]["group_ids"] == "(16, 1, 1) int64"
    assert by["per-class"]["group_ids"] == "(80,) int64"
    assert by["per-class"]["groups"] == 80 and by["retrieval"]["groups"] <= 4096
    assert by["per-query"]["groups"] == 4000  # 25,600 entries: full-size ids in runs
    for name in GROUPED[1:]:
        e = by[name]
        assert e["grouped_median_s"] > 0 and e["loop_median_s"] > 0
        assert 1 <= e["groups_with_positive"] <= e["groups"]
        # the grouped call agrees with the loop of ungrouped calls (float32 scores)
        assert e["err_loss_vs_loop"] < 1e-5 and e["err_grad_vs_loop"] < 1e-6
    assert by["retrieval"]["loss"] == by["retrieval-big-ids"]["loss"]  # the same grouping
    assert "## Grouped vs ungrouped (group_ids)" in text

    family = result["family"]
    assert family["regime"] == "init"
    assert [(pt["n"], pt["p"], pt["sweeps"]) for pt in family["points"]] == [
        (20_000, 20, ["N"]), (10_000, 20, ["P"]), (10_000, 200, ["P"])]
    for pt in family["points"]:
        impls = pt["impls"]
        assert list(impls) == FAMILY
        for name, row in impls.items():
            assert row["status"] == "measured", row  # the loops are cheap at these sizes
            assert row["median_s"] > 0 and 1 <= len(row["samples"]) <= 2
        for loss in ("rank_sort", "alrp"):
            row = impls[loss]
            assert row["agrees"] and row["err_grad"] < 1e-6 and row["err_loss"] < 1e-5
            assert len(row["vs_focal_rounds"]) == 2 and len(row["loop_vs_ours_rounds"]) >= 1
        assert impls["alrp"]["err_reg_grad"] < 1e-6 and "err_reg_grad" not in impls["rank_sort"]
    # no N = 4M point in this run: every goal reads 'not measured'
    assert len(family["goals"]) == 5 and all(g["met"] is None for g in family["goals"])
    for heading in ("## Rank & Sort and aLRP against focal loss", "### Goals",
                    "### Rank & Sort, N sweep (P = N/1000)", "### Rank & Sort, P sweep",
                    "### aLRP, N sweep (P = N/1000)", "### aLRP, P sweep", "### Agreement"):
        assert heading in text
    assert "| Rank & Sort | ours / focal loss, N = 4,000,000, P = 4,000 | — | <= 1 | — |" in text
    assert "**no**" not in text

    (fixed,) = result["fixed"]["points"]
    assert (fixed["n"], fixed["p"]) == (1_000, 10)
    assert set(fixed["median_s"]) == {"bce", "ap_loss", "rank_sort_loss", "alrp_loss"}
    assert all(v > 0 for v in fixed["median_s"].values())
    assert set(fixed["ratio"]) == {"ap_loss", "rank_sort_loss", "alrp_loss"}
    assert "## Fixed cost: small N against BCE-with-logits" in text

    (row,) = result["distributed"]["rows"]
    assert (row["world"], row["n"], row["p"]) == (2, 20_000, 20)
    assert row["calls"] and {op for op, _ in row["calls"]} <= set(COLLECTIVE_OPS)
    # P-sized traffic: far below gathering the scores and labels
    assert 0 < row["bytes_per_rank"] < row["n_sized_bytes_per_rank"] / 100
    assert row["distributed_median_s"] > 0 and row["single_process_median_s"] > 0

    (ypt,) = result["yolo"]["points"]
    assert (ypt["images"], ypt["n"], ypt["p"]) == (1, 8_400 * 80, 50)
    assert list(ypt["impls"]) == YOLO
    for name, row in ypt["impls"].items():
        assert row["status"] == "measured" and row["median_s"] > 0 and len(row["samples"]) == 2
        assert ("vs_bce_rounds" in row) == (name != "bce")
    assert "### 1 images: N = 672,000 (672k), P = 50" in text


def test_yolo_bce_is_the_yolo_formula():
    import bench_yolo

    scores = torch.randn(2, 5, 3, dtype=torch.float64)
    targets = torch.zeros(2, 5, 3, dtype=torch.float64)
    targets[0, 1, 2], targets[1, 4, 0] = 0.25, 0.5
    # v8DetectionLoss: BCEWithLogitsLoss(reduction="none") summed, over the targets' sum
    # clamped at 1 (here 0.75, so 1).
    expected = torch.nn.BCEWithLogitsLoss(reduction="none")(scores, targets).sum() / 1.0
    assert torch.allclose(bench_yolo.yolo_bce(scores, targets), expected)
    targets[1, 3, 1] = 1.0  # sum 1.75
    expected = torch.nn.BCEWithLogitsLoss(reduction="none")(scores, targets).sum() / 1.75
    assert torch.allclose(bench_yolo.yolo_bce(scores, targets), expected)


def test_one_section_with_plots(tmp_path):
    pytest.importorskip("matplotlib")
    _run(["--section", "sweeps", "--quick", "--sizes", "20k", "--positives", "20",
          "--psweep-n", "20k", "--regime", "init", "--impls", "sorted,focal", "--no-progress"],
         tmp_path)
    stems = sorted(p.name.split("-quick")[1] for p in tmp_path.iterdir())
    assert stems == ["-sweeps-time-vs-N.png", "-sweeps-time-vs-P.png", "-sweeps.json", "-sweeps.md"]
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert set(result) == {"meta", "sweeps"}
    assert set(result["sweeps"]["points"][0]["impls"]) == {"sorted", "focal"}


COLLECTIVES = textwrap.dedent("""
    import json, sys, tempfile
    import torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    import aploss_cuda
    from common.collectives import CollectiveBytes

    store = f"file://{tempfile.mkdtemp()}/store"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    originals = dist.all_gather, dist.all_reduce
    with CollectiveBytes() as direct:
        dist.all_gather([torch.empty(5)], torch.ones(5))
        dist.all_reduce(tensor=torch.ones(2, dtype=torch.float64))
        dist.broadcast(torch.ones(4, dtype=torch.int8), 0)
    try:
        with CollectiveBytes():
            raise KeyError
    except KeyError:
        pass
    scores = torch.randn(20_000, requires_grad=True)
    labels = torch.zeros(20_000, dtype=torch.int64)
    labels[:20] = 1
    with CollectiveBytes() as loss_call:
        aploss_cuda.ap_loss(scores, labels, process_group=dist.group.WORLD).backward()
    restored = (dist.all_gather, dist.all_reduce) == originals
    dist.destroy_process_group()
    print(json.dumps(dict(direct=direct.calls, total=direct.total, loss_call=loss_call.calls,
                          restored=restored)))
""")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_collective_bytes_on_a_one_process_group():
    # cwd: not the checkout, whose aploss_cuda/ (no compiled extension) would shadow the installed
    proc = subprocess.run([sys.executable, "-c", COLLECTIVES, BENCH], cwd=BENCH,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["direct"] == [["all_gather", 20], ["all_reduce", 16], ["broadcast", 4]]
    assert got["total"] == 40 and got["restored"]
    ops = [op for op, _ in got["loss_call"]]
    assert ops and set(ops) <= set(COLLECTIVE_OPS)
    assert sum(size for _, size in got["loss_call"]) < 20_000 * 4 / 10  # P-sized, not N-sized


def _family_cfg(*args):
    import run  # benchmarks/run.py: the configuration exactly as the command line builds it

    return run.resolve(run.build_parser().parse_args(["--section", "family", "--quick", *args]))


def test_family_agreement_fails_against_a_wrong_baseline(monkeypatch):
    cfg = _family_cfg("--family-sizes", "5k", "--family-positives", "none", "--rounds", "1")
    # wrong on purpose: another delta for Rank & Sort, doubled regression losses for aLRP
    wrong_rs = lambda s, t: rank_sort_loop(s, t, delta=0.25)
    wrong_alrp = lambda s, y, r, delta: alrp_loop(s, y, 2 * r, delta)
    monkeypatch.setitem(bench_family.IMPLEMENTATIONS, "rank_sort-loop",
                        ("wrong loop", "rank_sort", "loop", wrong_rs))
    monkeypatch.setitem(bench_family.IMPLEMENTATIONS, "alrp-loop",
                        ("wrong loop", "alrp", "loop", bench_family._alrp_total(wrong_alrp)))
    section = bench_family.run(cfg, Progress(1, "", enabled=False))
    (pt,) = section["points"]
    rs, alrp = pt["impls"]["rank_sort"], pt["impls"]["alrp"]
    assert not rs["agrees"] and rs["err_loss"] > 1e-3
    assert not alrp["agrees"] and alrp["err_reg_grad"] > 1e-4
    agreement = bench_family.markdown(section).split("### Agreement")[1]
    assert agreement.count("**no**") == 2


def _timed_row(median_s, **extra):
    return dict(status="measured", median_s=median_s, samples=[median_s], **extra)


def _goal_point(p, rs_vs_focal, alrp_vs_focal, rs_s, alrp_s):
    impls = dict(rank_sort=_timed_row(rs_s, vs_focal_rounds=rs_vs_focal),
                 alrp=_timed_row(alrp_s, vs_focal_rounds=alrp_vs_focal),
                 focal=_timed_row(0.1), ap=_timed_row(rs_s / 2))
    return dict(n=4_000_000, p=p, sweeps=["P"], impls=impls)


def test_family_goals_are_computed_from_the_numbers():
    points = [_goal_point(400, [0.2], [0.3], 0.02, 0.03),
              _goal_point(4000, [0.7, 0.9, 1.6], [1.3, 1.1, 1.2], 0.10, 0.20),
              _goal_point(40000, [1.2], [2.0], 0.14, 0.40)]
    section = dict(regime="init", nsweep_p="N/1000", focal_source="x", points=points)
    def goals():
        return {(g["loss"], g["measure"]): (g["value"], g["goal"], g["met"])
                for g in bench_family.goals(section)}

    got = goals()
    at = "N = 4,000,000"
    growth = f"ours at P = 40,000 / at P = 4,000, {at}"
    assert got[("Rank & Sort", f"ours / focal loss, {at}, P = 4,000")] == (0.9, 1.0, True)
    assert got[("aLRP", f"ours / focal loss, {at}, P = 4,000")] == (1.2, 1.0, False)
    assert got[("Rank & Sort", f"ours / focal loss, {at}, P = 400")] == (0.2, None, None)
    assert got[("Rank & Sort", growth)][1:] == (1.5, True)
    assert got[("Rank & Sort", growth)][0] == pytest.approx(1.4)
    assert got[("aLRP", growth)] == (2.0, 1.5, False)
    shared = got[("ap_loss (the shared passes)", f"at P = 40,000 / at P = 4,000, {at}")]
    assert shared[0] == pytest.approx(1.4) and shared[1:] == (None, None)
    text = bench_family.markdown(section)
    assert f"| Rank & Sort | ours / focal loss, {at}, P = 4,000 | 0.9 | <= 1 | yes |" in text
    assert f"| aLRP | ours / focal loss, {at}, P = 4,000 | 1.2 | <= 1 | **no** |" in text
    assert f"| aLRP | {growth} | 2 | <= 1.5 | **no** |" in text

    # other numbers, other verdicts; and the goals are the init regime's only
    points[1]["impls"]["alrp"]["vs_focal_rounds"] = [0.5]
    assert goals()[("aLRP", f"ours / focal loss, {at}, P = 4,000")] == (0.5, 1.0, True)
    section["regime"] = "trained"
    assert all(g["met"] is None for g in bench_family.goals(section))
