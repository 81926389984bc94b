#!/usr/bin/env python
"""Benchmark aploss_cuda: the one command.

    python benchmarks/run.py                     # every section (minutes on 2 CPU cores)
    python benchmarks/run.py --quick             # small sizes, under a minute
    python benchmarks/run.py --section family    # one section: sweeps, grouped, family, floor,
                                                 # fixed, distributed, yolo
    python benchmarks/run.py --device cuda --quick --retinanet on

Sections: bench_sweeps.py (ap_loss against focal loss and the baselines, over N and P),
bench_grouped.py (group_ids against the ungrouped call), bench_family.py (rank_sort_loss
and alrp_loss against focal loss and their per-positive loops, over N and P), bench_floor.py
(ap_loss against the memory floor and strict focal loss, ns per entry of each pass),
bench_fixed.py (the three losses against BCE-with-logits at small N: a call's fixed cost),
bench_distributed.py (bytes per call under process_group; CPU only), bench_yolo.py (the
ranking losses at Ultralytics YOLO's batch size against YOLO's BCE). Writes
<out>/<device>-<date>[-quick][-<section>].json and .md, and PNG plots of the sweeps when
matplotlib is installed. Methodology: benchmarks/README.md.
"""

import argparse
import json
import os
import sys
import time
from types import SimpleNamespace

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the sections and common/, also under python -P
try:
    import aploss_cuda
except ModuleNotFoundError as e:  # not installed: an in-place build in the checkout
    if e.name != "aploss_cuda":
        raise
    sys.path.append(os.path.dirname(HERE))
    import aploss_cuda

import bench_distributed  # noqa: E402
import bench_family  # noqa: E402
import bench_fixed  # noqa: E402
import bench_floor  # noqa: E402
import bench_grouped  # noqa: E402
import bench_sweeps  # noqa: E402
import bench_yolo  # noqa: E402
from common.inputs import LABEL_DTYPES, NO_IGNORE, REGIMES, SCORE_DTYPES  # noqa: E402
from common.inputs import parse_count, parse_counts  # noqa: E402
from common.machine import OtherProcessesCpu, environment  # noqa: E402
from common.memory import PeakMemory  # noqa: E402
from common.progress import Progress  # noqa: E402

SECTIONS = {"sweeps": bench_sweeps, "grouped": bench_grouped, "family": bench_family,
            "floor": bench_floor, "fixed": bench_fixed, "distributed": bench_distributed,
            "yolo": bench_yolo}
DEFAULTS = {  # (device, --quick) -> sizes
    ("cpu", False): dict(sizes="100k,250k,1M,2M,4M,16M", psweep_n="1M",
                         positives="100,300,1000,3000,10000", grouped_sizes="1M,4M",
                         family_sizes="100k,250k,1M,2M,4M,16M", family_psweep_n="4M",
                         family_positives="400,4000,40000", distributed_sizes="100k,1M,4M",
                         floor_n="4M", floor_positives="4000,40000", fixed_sizes="1k,10k",
                         yolo_images=16, yolo_positives="500,2000"),
    ("cpu", True): dict(sizes="20k,100k,500k", psweep_n="100k", positives="20,2000",
                        grouped_sizes="100k", family_sizes="20k,100k,500k",
                        family_psweep_n="100k", family_positives="20,200,2000",
                        distributed_sizes="20k,200k", floor_n="200k", floor_positives="200,2000",
                        fixed_sizes="1k", yolo_images=2, yolo_positives="100"),
    ("cuda", False): dict(sizes="1M,4M,16M,64M,128M", psweep_n="16M",
                          positives="500,2000,8000,32000,128000", grouped_sizes="4M,16M,64M",
                          family_sizes="1M,4M,16M,64M", family_psweep_n="4M",
                          family_positives="400,4000,40000", distributed_sizes="100k,1M,4M",
                          floor_n="64M", floor_positives="64000,640000",
                          fixed_sizes="1k,100k", yolo_images=16, yolo_positives="500,2000"),
    ("cuda", True): dict(sizes="1M,16M", psweep_n="4M", positives="400,4000",
                         grouped_sizes="1M,16M", family_sizes="1M,4M", family_psweep_n="4M",
                         family_positives="400,4000,40000", distributed_sizes="20k,200k",
                         floor_n="16M", floor_positives="16000,160000", fixed_sizes="1k",
                         yolo_images=16, yolo_positives="500"),
}


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add = ap.add_argument
    add("--section", choices=["all", *SECTIONS], default="all",
        help="what to run (default all; distributed runs on the CPU only)")
    add("--quick", action="store_true", help="small sizes, 3 rounds, a 1 s budget")
    add("--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="auto: cuda when torch.cuda.is_available()")
    add("--sizes", help="N of the N sweep, comma list: 1e6, 4M, 64k ('none': no N sweep)")
    add("--nsweep-p", default="N/1000",
        help="P at each N of the N sweeps (sweeps, family) and the grouped section: N/1000 "
        "or a fixed count")
    add("--positives", help="P of the P sweep, comma list ('none': no P sweep)")
    add("--psweep-n", help="N of the P sweep")
    add("--regime", choices=["init", "trained", "both"], default="both",
        help="score distribution (grouped and family: init unless 'trained'): "
        + "; ".join(f"{k}: {v}" for k, v in REGIMES.items()))
    add("--retinanet", choices=["auto", "on", "off"], default="auto",
        help="the RetinaNet-scale point in the sweeps (98.2M entries, P = 2,000); "
        "auto: on for CUDA without --quick")
    add("--impls", default=",".join(bench_sweeps.IMPLEMENTATIONS),
        help="comma subset of the sweeps' implementations (default: all)")
    add("--grouped-sizes", help="N of the grouped section, comma list")
    add("--family-sizes", help="N of the family section's N sweep, comma list ('none': none)")
    add("--family-positives", help="P of the family section's P sweep, comma list ('none': none)")
    add("--family-psweep-n", help="N of the family section's P sweep")
    add("--floor-n", help="N of the floor section (init regime, int64 and int8 labels)")
    add("--floor-positives", help="P of the floor section, comma list: the first is the "
        "reference point, the last the P-growth goal's")
    add("--distributed-sizes", help="N of the distributed section, comma list")
    add("--fixed-sizes", help="N of the fixed-cost section (small N against BCE), comma list")
    add("--yolo-images", type=int, help="images of 640 px (8,400 anchors x 80 classes each) in "
        "the yolo section's batch (default 16; --quick on the CPU: 2)")
    add("--yolo-positives", help="P of the yolo section, comma list")
    add("--rounds", type=int, help="interleaved timed rounds per point (default 7, --quick 3)")
    add("--budget", type=float, help="seconds per implementation and point (default 10, "
        "--quick 1): an O(P*N) baseline predicted slower than this is not run")
    add("--score-dtype", choices=list(SCORE_DTYPES), default="float32")
    add("--label-dtype", choices=list(LABEL_DTYPES), default="int64")
    add("--ignore-frac", type=float, default=0.01, help="fraction of entries labelled -1")
    add("--seed", type=int, default=0)
    add("--out", default=os.path.join(HERE, "results"), help="default: benchmarks/results")
    add("--no-plot", action="store_true", help="no PNG plots")
    add("--no-progress", action="store_true", help="no progress bar")
    return ap


def resolve(args):
    """The run's configuration: every default filled in (into args too), sizes parsed."""
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    for key, value in DEFAULTS[(device, args.quick)].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.budget = args.budget or (1.0 if args.quick else 10.0)
    impls = [k.strip() for k in args.impls.split(",") if k.strip()]
    unknown = set(impls) - set(bench_sweeps.IMPLEMENTATIONS)
    if unknown:
        raise SystemExit(f"--impls: unknown {sorted(unknown)}")
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    if LABEL_DTYPES[args.label_dtype] in NO_IGNORE and args.ignore_frac > 0:
        print(f"note: {args.label_dtype} labels cannot hold -1: no ignored entries",
              file=sys.stderr)
    sections = list(SECTIONS) if args.section == "all" else [args.section]
    if device != "cpu" and "distributed" in sections:
        if args.section == "distributed":
            raise SystemExit("the distributed section runs gloo processes on the CPU")
        sections.remove("distributed")
    info = aploss_cuda.info()
    return SimpleNamespace(
        sections=sections, device=torch.device(device), impls=impls,
        sizes=parse_counts(args.sizes), nsweep_p=args.nsweep_p,
        positives=parse_counts(args.positives), psweep_n=parse_count(args.psweep_n),
        grouped_sizes=parse_counts(args.grouped_sizes),
        family_sizes=parse_counts(args.family_sizes),
        family_positives=parse_counts(args.family_positives),
        family_psweep_n=parse_count(args.family_psweep_n),
        distributed_sizes=parse_counts(args.distributed_sizes),
        fixed_sizes=parse_counts(args.fixed_sizes),
        floor_n=parse_count(args.floor_n), floor_positives=parse_counts(args.floor_positives),
        yolo_images=args.yolo_images, yolo_positives=parse_counts(args.yolo_positives),
        regimes=["init", "trained"] if args.regime == "both" else [args.regime],
        grouped_regime="trained" if args.regime == "trained" else "init",
        family_regime="trained" if args.regime == "trained" else "init",
        retinanet=args.retinanet == "on" or (args.retinanet == "auto" and device == "cuda"
                                             and not args.quick),
        rounds=args.rounds, budget=args.budget, round_s=0.03 if args.quick else 0.1,
        reference_max_pn=1e7 if args.quick else 1e8, seed=args.seed,
        problem=dict(device=device, score_dtype=SCORE_DTYPES[args.score_dtype],
                     label_dtype=LABEL_DTYPES[args.label_dtype], ignore_frac=args.ignore_frac),
        kernels_usable=device == "cpu" or bool(info.get("cuda_kernels_usable", True)),
    )


def header(meta):
    env, s = meta["environment"], meta["settings"]
    lines = [
        f"# aploss_cuda benchmark: {env['device']}, {env['date']}", "",
        f"`python benchmarks/run.py {' '.join(meta['argv'])}`, {meta['wall_s']:.0f} s. "
        "Method: benchmarks/README.md.", "",
        f"- {env['device_name']}, torch {env['torch']}, {env['threads']} threads",
        f"- aploss_cuda from {env['aploss_cuda_file']} (checkout {env['checkout']}), "
        f"info() = {env['aploss_cuda_info']}",
        f"- scores {s['score_dtype']}, labels {s['label_dtype']}, {100 * s['ignore_frac']:g}% "
        f"ignored, delta 1, interpolated AP; {s['rounds']} interleaved rounds, budget "
        f"{s['budget']:g} s per implementation and point",
        f"- peak extra memory: {meta['memory']}",
    ]
    lines += [f"- regime '{k}': {v}" for k, v in REGIMES.items() if s["regime"] in (k, "both")]
    if meta["other_cpu_share"] is not None:
        lines.append(f"- other processes used {100 * meta['other_cpu_share']:.1f}% of the CPUs "
                     f"during the run, {100 * meta['other_cpu_share_worst_point']:.1f}% during "
                     "the busiest point")
    return lines + [""]


def write_plots(results, out, stem, title):
    if "sweeps" not in results:
        return []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return []
    import plots

    return plots.write_plots(results["sweeps"], out, stem, title)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    started, cpu = time.perf_counter(), OtherProcessesCpu().start()
    cfg = resolve(args)
    steps = dict(sweeps=len(bench_sweeps.plan(cfg)), grouped=len(cfg.grouped_sizes),
                 family=len(bench_family.plan(cfg)), floor=len(bench_floor.LABELS),
                 fixed=len(bench_fixed.plan(cfg)), distributed=1, yolo=len(bench_yolo.plan(cfg)))
    progress = Progress(sum(steps[s] for s in cfg.sections), "aploss benchmark",
                        enabled=not args.no_progress)
    results = {name: SECTIONS[name].run(cfg, progress) for name in cfg.sections}
    progress.close()

    points = [pt for section in results.values() for pt in section.get("points", [])]
    meta = dict(environment=environment(cfg.device, aploss_cuda), settings=vars(args), argv=argv,
                wall_s=time.perf_counter() - started, other_cpu_share=cpu.stop(),
                other_cpu_share_worst_point=max((pt["other_cpu_share"] or 0 for pt in points),
                                                default=0.0),
                memory=PeakMemory(cfg.device).method)
    env = meta["environment"]
    stem = f"{env['device']}-{env['date']}" + ("-quick" if args.quick else "")
    stem += "" if args.section == "all" else f"-{args.section}"
    os.makedirs(args.out, exist_ok=True)
    plots = [] if args.no_plot else write_plots(results, args.out, stem,
                                                f"{env['device_name']}, {env['date']}")
    text = "\n".join(header(meta) + [SECTIONS[name].markdown(results[name]) for name in results]
                     + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots])
    print(text)
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump(dict(meta=meta, **results), f, indent=1)
    print(f"\nwrote {os.path.join(args.out, stem)}.json and .md"
          + (f" and {len(plots)} plots" if plots else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
