"""Section 'floor': ap_loss against the memory floor and against strict sigmoid focal loss
at one size, in the init regime (every negative within delta of a positive: no pruning).

The memory floor is what one fwd+bwd must move at least, reading scores and labels once
and writing the gradient once, N x (score + label + score bytes), at the copy bandwidth of
this machine measured in the same rounds: bytes of an initialised buffer much larger than
the last-level cache (8x, at least 256 MiB) over the time to copy it. Reported per label
dtype (int64, int8): ap_loss fwd+bwd / floor, ap_loss / strict focal loss, ns per entry
of each pass (gather, pass 1, pass 2, from the stage operators), the CPU passes' scalar
path and one thread against the default (CPU only), and the time at the largest P against
the first P.
"""

import os
import re
import shutil
import statistics
import subprocess

import torch

from baselines import focal_loss
from common.inputs import make_problem
from common.machine import OtherProcessesCpu
from common.tables import fmt_ratio, fmt_time, markdown_table
from common.timing import fwd_bwd, interleaved, timed

import aploss_cuda
from aploss_cuda import _extension

LABELS = {"int64": torch.int64, "int8": torch.int8}
DELTA = 1.0
GOALS = dict(focal=0.5, floor=10.0, p_growth=1.5, threads=1.7)


def plan(cfg):
    return [(label, p) for label in LABELS for p in cfg.floor_positives]


def lscpu():
    """CPU model and cache sizes ({} where lscpu is missing)."""
    if shutil.which("lscpu") is None:
        return {}
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    keys = ("Model name", "CPU(s)", "Thread(s) per core", "L1d cache", "L2 cache", "L3 cache",
            "Flags")
    fields = dict(re.findall(r"^([^:]+):\s*(.*)$", out, re.M))
    found = {k: fields[k].strip() for k in keys if k in fields}
    if "Flags" in found:  # only what the kernels can use
        found["Flags"] = " ".join(f for f in found["Flags"].split()
                                  if f in ("avx2", "avx512f", "fma"))
    return found


def last_level_cache_bytes(machine):
    text = machine.get("L3 cache") or machine.get("L2 cache") or "32 MiB"
    match = re.match(r"([0-9.]+)\s*([KMG])i?B?", text)
    if not match:
        return 32 << 20
    return int(float(match.group(1)) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)])


def copy_thunk(device, nbytes):
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.zeros_like(src)  # both touched: no page faults or zero pages in the timing
    return lambda: dst.copy_(src)


def stage_thunks(scores, labels):
    """The passes one by one through the stage operators (aploss_cuda/distributed.py's)."""
    ops = torch.ops.aploss
    gathered = ops.gather(scores, labels, None)
    q, offsets, group, positions, memory_rank = ops.rank_positives(gathered, 1, DELTA)
    fp = ops.pass1(scores, labels, None, q, offsets, group, DELTA, "sorted")
    _, _, state, positive_grads = ops.positive_stage(
        "ap_loss", q, offsets, group, positions, memory_rank, fp, None, DELTA, True, scores.dtype,
        "sorted")
    one = torch.ones((), device=scores.device)
    no_classes = torch.empty(0, dtype=torch.int64, device=scores.device)  # pass 2 reads labels
    return {
        "gather": lambda: ops.gather(scores, labels, None),
        "pass 1": lambda: ops.pass1(scores, labels, None, q, offsets, group, DELTA, "sorted"),
        "pass 2": lambda: ops.loss_backward(one, scores, labels, no_classes, None, state, offsets,
                                            positive_grads, DELTA, "sorted"),
    }


def with_setting(thunk, *, threads=None, scalar=False):
    def run():
        old = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        if scalar:
            _extension._C._set_cpu_vector_lanes(False)
        try:
            return thunk()
        finally:
            torch.set_num_threads(old)
            _extension._C._set_cpu_vector_lanes(True)
    return run


def measure(cfg, label_name, copy_bytes):
    """One label dtype: every P of the section, the floor and focal loss in the same rounds."""
    device, n = cfg.device, cfg.floor_n
    thunks, problems = {"copy": copy_thunk(device, copy_bytes)}, {}
    for i, p in enumerate(cfg.floor_positives):
        scores, labels = make_problem(n, p, "init", device=device, seed=cfg.seed + i,
                                      label_dtype=LABELS[label_name])
        scores.requires_grad_(True)
        problems[p] = (scores, labels)
        thunks[("ap_loss", p)] = lambda s=scores, y=labels: fwd_bwd(aploss_cuda.ap_loss, s, y)
    first_p = cfg.floor_positives[0]
    scores, labels = problems[first_p]
    thunks["focal"] = lambda: fwd_bwd(focal_loss, scores, labels)
    for name, thunk in stage_thunks(scores.detach(), labels).items():
        thunks[name] = thunk
    if device.type == "cpu":
        call = thunks[("ap_loss", first_p)]
        thunks["scalar path"] = with_setting(call, scalar=True)
        thunks["one thread"] = with_setting(call, threads=1)
    first = {k: timed(t)[0] for k, t in thunks.items()}  # warm-up
    samples = interleaved(thunks, first, rounds=cfg.rounds, round_s=cfg.round_s,
                          budget_s=cfg.budget)
    median = {k: statistics.median(v) for k, v in samples.items()}
    bandwidth = copy_bytes / median["copy"]
    entry_bytes = 2 * scores.element_size() + labels.element_size()
    floor = n * entry_bytes / bandwidth
    ours = median[("ap_loss", first_p)]
    point = dict(
        labels=label_name, n=n, positives=list(cfg.floor_positives),
        copy_bytes=copy_bytes, copy_bandwidth=bandwidth, entry_bytes=entry_bytes, floor_s=floor,
        ap_loss_s={str(p): median[("ap_loss", p)] for p in cfg.floor_positives},
        focal_s=median["focal"], floor_ratio=ours / floor, focal_ratio=ours / median["focal"],
        p_growth=median[("ap_loss", cfg.floor_positives[-1])] / ours,
        pass_ns_per_entry={k: 1e9 * median[k] / n for k in ("gather", "pass 1", "pass 2")},
        samples={str(k): v for k, v in samples.items()},
    )
    if device.type == "cpu":
        point["scalar_path_s"] = median["scalar path"]
        point["one_thread_s"] = median["one thread"]
        point["thread_scaling"] = median["one thread"] / ours
    return point


def run(cfg, progress):
    machine = lscpu() if cfg.device.type == "cpu" else {
        "Model name": torch.cuda.get_device_name(cfg.device)}
    copy_bytes = max(256 << 20, 8 * last_level_cache_bytes(machine))
    points = []
    for label_name in LABELS:
        cpu = OtherProcessesCpu().start()
        point = measure(cfg, label_name, copy_bytes)
        point["other_cpu_share"] = cpu.stop()
        points.append(point)
        progress.step(f"floor, {label_name} labels")
    return dict(machine=machine, threads=torch.get_num_threads(), goals=GOALS, points=points,
                lanes=aploss_cuda.info().get("cpu_vector_lanes"))


def verdict(value, goal):
    return "met" if value <= goal else "not met"


def markdown(section):
    machine = section["machine"]
    lines = ["## ap_loss against the memory floor and focal loss (init regime)", "",
             "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + f"; "
             f"{section['threads']} threads; CPU lanes: {section['lanes']}.", "",
             "Floor = N x (score + label + score bytes) / copy bandwidth (bytes of an "
             "initialised buffer of 8x the last-level cache, at least 256 MiB, over its copy "
             "time), measured in the same interleaved rounds as the losses.", ""]
    headers = ["labels", "N", "P", "copy GB/s", "floor", "ap_loss fwd+bwd", "/ floor",
               "focal fwd+bwd", "ap_loss / focal", "gather, pass 1, pass 2 (ns/entry)",
               "scalar path", "one thread (x)", f"P = {section['points'][0]['positives'][-1]:,}"
               " / first P"]
    rows = []
    for pt in section["points"]:
        first_p = pt["positives"][0]
        ns = pt["pass_ns_per_entry"]
        rows.append([
            pt["labels"], f"{pt['n']:,}", f"{first_p:,}", f"{pt['copy_bandwidth'] / 1e9:.1f}",
            fmt_time(pt["floor_s"]), fmt_time(pt["ap_loss_s"][str(first_p)]),
            fmt_ratio(pt["floor_ratio"]), fmt_time(pt["focal_s"]), fmt_ratio(pt["focal_ratio"]),
            ", ".join(f"{ns[k]:.2f}" for k in ("gather", "pass 1", "pass 2")),
            fmt_time(pt.get("scalar_path_s")),
            fmt_ratio(pt["thread_scaling"]) if "thread_scaling" in pt else "—",
            fmt_ratio(pt["p_growth"])])
    lines += [markdown_table(headers, rows), ""]
    goals = section["goals"]
    goal_rows = []
    for pt in section["points"]:
        goal_rows += [
            [f"ap_loss / strict focal loss, {pt['labels']} labels", f"<= {goals['focal']}",
             fmt_ratio(pt["focal_ratio"]), verdict(pt["focal_ratio"], goals["focal"])],
            [f"ap_loss / memory floor, {pt['labels']} labels", f"<= {goals['floor']:g}",
             fmt_ratio(pt["floor_ratio"]), verdict(pt["floor_ratio"], goals["floor"])],
            [f"largest P / first P, {pt['labels']} labels", f"<= {goals['p_growth']}",
             fmt_ratio(pt["p_growth"]), verdict(pt["p_growth"], goals["p_growth"])]]
        if "thread_scaling" in pt and section["threads"] > 1:
            goal_rows.append([f"one thread / {section['threads']} threads, {pt['labels']} labels",
                              f">= {goals['threads']}", fmt_ratio(pt["thread_scaling"]),
                              "met" if pt["thread_scaling"] >= goals["threads"] else "not met"])
    lines += ["### Goals", "", markdown_table(["goal", "target", "measured", ""], goal_rows), ""]
    return "\n".join(lines)
