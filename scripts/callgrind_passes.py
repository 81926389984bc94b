#!/usr/bin/env python
"""Instructions per entry of each CPU pass of aploss_cuda.ap_loss, counted by callgrind.

One command runs everything: this script (the driver) re-runs itself under
`valgrind --tool=callgrind` (the child), then reads the child's callgrind dumps and prints
markdown tables of instructions per entry (Ir / N) of the gather, pass 1 and pass 2, per
label dtype and P, on one thread, float32 scores, the benchmarks' "init" problems
(benchmarks/common/inputs.py, make_problem: every negative within delta of a positive).

    python scripts/callgrind_passes.py                      # the installed aploss_cuda
    python scripts/callgrind_passes.py --pythonpath /tmp/old  # another build of it
    python scripts/callgrind_passes.py --n 250k --p-divisors 1000,100 --labels int8

How it counts. The child marks each measured call with callgrind client requests
(CALLGRIND_DUMP_STATS_AT, from a tiny C helper compiled at run time and loaded with
ctypes): one dump before and one after the call, so each call has its own profile. From
that profile the driver takes the *inclusive* cost of the call's C++ entry function (found
with `nm -C` on the build's _C*.so), so the Python and dispatcher overhead around the call
is left out; the whole profile of the call (with that overhead) is kept as `phase_total`
in --json. Collection is on throughout; instrumentation starts (--instr-atstart=no) only
after torch is imported and the problems are made.

Two kinds of build are handled:

* stage operators (torch.ops.aploss.gather / rank_positives / pass1 / positive_stage /
  pass2, commits from bf44b97 on): called as benchmarks/bench_floor.py's stage_thunks does.
  Entry functions aploss::ops::gather, aploss::ops::pass1, aploss::ops::backward (the
  pass2 operator). The CPU interval index of the positives is cached (the last one built
  per key type, csrc/cpu/interval_index_cpu.cpp): pass 1 is counted once as the first call
  after a different problem's pass 1 (the index is built, as in a real forward) and once
  again right after (the index is reused); pass 2 is counted after pass 1 and the positive
  stage of the same problem (the index is reused, as in a real backward).
* older builds without those operators (e.g. 944923c): the whole ap_loss_forward /
  ap_loss_backward operators are called and callgrind also dumps at the entry of each
  call of aploss::cpu::sorted_pass1 (--dump-before), which separates the forward's pass 1
  over the N entries from its second pass 1 over the P positives. Gather: the kernel
  aploss::cpu::gather_positives (the forward's sort of the positives is left out, as the
  stage build's rank_positives is); pass 1: aploss::cpu::sorted_pass1 (entries call) plus
  the aploss::sums_from_differences that follows it (as the stage build's pass1 operator
  does); pass 2: aploss::ap_loss_backward. These builds rebuild the index every call.

A second table counts the kernel functions only (aploss::cpu::gather or gather_positives,
aploss::cpu::sorted_pass1, aploss::cpu::sorted_pass2), the same scope in both kinds of
build. "index build" is the inclusive cost of the index's constructor within pass 1
(OwnedIntervalIndex<K> or OwnedWindowIndex). "fwd+bwd" is the whole profile (with the
Python/dispatcher overhead) of one ap_loss_forward operator call plus one backward
operator call, the forward following a different problem (so it builds the index).

--scalar runs the passes' scalar path (_C._set_cpu_vector_lanes(False)) instead of the AVX2
lanes; valgrind runs the AVX2 lanes (info()['cpu_vector_lanes'] is printed as the child
saw it). The run stops if the _C*.so it measured is replaced meanwhile (e.g. by a pip
install): its sha256 is compared before, in the child and after.
"""

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

DELTA = 1.0
LABELS = ("int64", "int8")

# Client requests for callgrind, called through ctypes.
HELPER_C = r"""
#include <valgrind/callgrind.h>
int cg_running(void) { return RUNNING_ON_VALGRIND; }
void cg_dump(const char* what) { CALLGRIND_DUMP_STATS_AT(what); }
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
"""

# Entry functions per role: candidates, by demangled name prefix up to the parameter
# list; the first one present in the build's _C*.so is used.
ROLES = {
    "stages": {
        "gather": ["aploss::ops::gather"],
        "pass1": ["aploss::ops::pass1"],
        "pass2": ["aploss::ops::loss_backward", "aploss::ops::backward", "aploss::ops::pass2"],
        "k_gather": ["aploss::cpu::gather"],
        "k_pass1": ["aploss::cpu::sorted_pass1"],
        "k_pass2": ["aploss::cpu::sorted_pass2"],
        "index": [r"aploss::cpu::OwnedIntervalIndex<float>::OwnedIntervalIndex"],
    },
    "legacy": {
        "gather": ["aploss::cpu::gather_positives"],
        "pass1": ["aploss::cpu::sorted_pass1"],
        "pass1_sums": ["aploss::sums_from_differences"],
        "pass2": ["aploss::ap_loss_backward"],
        "k_gather": ["aploss::cpu::gather_positives"],
        "k_pass1": ["aploss::cpu::sorted_pass1"],
        "k_pass2": ["aploss::cpu::sorted_pass2"],
        "index": ["aploss::cpu::OwnedWindowIndex::OwnedWindowIndex"],
    },
}


def parse_count(text):
    match = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)([kKmM]?)", text.strip().replace("_", ""))
    if not match:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    return int(round(float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[match.group(2).lower()]))


def file_sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def import_package(pythonpath):
    """Imports aploss_cuda (DIR first on sys.path when given) and checks where from."""
    if pythonpath:
        sys.path.insert(0, os.path.abspath(pythonpath))
    import torch  # noqa: F401
    import aploss_cuda

    where = os.path.realpath(aploss_cuda.__file__)
    if pythonpath:
        want = os.path.realpath(pythonpath) + os.sep
        if not where.startswith(want):
            sys.exit(f"aploss_cuda was imported from {where}, not from --pythonpath {pythonpath}")
    sos = glob.glob(os.path.join(os.path.dirname(where), "_C*.so"))
    if len(sos) != 1:
        sys.exit(f"expected one _C*.so next to {where}, found {sos}")
    return aploss_cuda, where, sos[0]


# ------------------------------------------------------------------------------ child


# Operators renamed between builds: the new name, then the older ones.
RENAMED = {"forward": ("loss_forward", "ap_loss_forward"), "pass2": ("loss_backward", "pass2")}


def op_name(role):
    import torch

    return next(n for n in RENAMED.get(role, (role,)) if hasattr(torch.ops.aploss, n))


def forward_outputs(out):
    """(state, offsets, positive_grads, classes) of the build's forward operator."""
    if len(out) == 8:  # loss_forward: (loss, extra, state, offsets, codes, labels, pg, classes)
        return out[2], out[3], out[6], out[7]
    return out[1], out[2], out[4] if len(out) > 4 else None, out[5] if len(out) > 5 else None


def call_op(name, **named):
    """torch.ops.aploss.<name> with the arguments its schema names (optional ones
    absent from `named` are None), so that small schema changes do not break the script."""
    import torch

    op = getattr(torch.ops.aploss, op_name(name))
    schema = op.default._schema
    args = []
    for a in schema.arguments:
        if a.name in named:
            args.append(named[a.name])
        elif a.has_default_value():
            args.append(a.default_value)
        elif a.type.kind() == "OptionalType":
            args.append(None)
        else:
            raise TypeError(f"aploss::{name}: no value for argument {a.name!r} ({schema})")
    return op(*args)


def child(spec):
    import ctypes

    import torch

    torch.set_num_threads(1)
    aploss_cuda, where, so_path = import_package(spec["pythonpath"])
    so_sha = file_sha(so_path)  # the file imported (unless replaced within this instant)
    sys.path.insert(0, spec["benchmarks"])
    from common.inputs import make_problem

    cg = ctypes.CDLL(spec["helper"])
    cg.cg_dump.argtypes = [ctypes.c_char_p]
    if not cg.cg_running():
        sys.exit("the child must run under valgrind --tool=callgrind")
    ops = torch.ops.aploss
    stages = spec["kind"] == "stages"
    one = torch.ones(())

    def measure(label, thunk):
        cg.cg_dump(f"begin {label}".encode())
        out = thunk()
        cg.cg_dump(f"end {label}".encode())
        return out

    problems = {}
    no_classes = torch.empty(0, dtype=torch.int64)  # pass 2 of the stages reads the labels
    for label_name in spec["labels"]:
        for p in spec["positives"]:
            for k in (0, 1):  # 1: the "different problem" (seed + 1) that evicts the index
                problems[label_name, p, k] = make_problem(
                    spec["n"], p, "init", device=torch.device("cpu"), seed=spec["seed"] + k,
                    label_dtype=getattr(torch, label_name))
    if spec["scalar"]:
        aploss_cuda._C._set_cpu_vector_lanes(False)
    info = aploss_cuda.info()
    cg.cg_start()  # instrumentation from here on

    def ranking(scores, labels):
        """stage_thunks' set-up: gathered, positives, false positives, state."""
        gathered = call_op("gather", scores=scores, labels=labels)
        r = call_op("rank_positives", gathered=gathered, num_groups=1, delta=DELTA)
        named = dict(positives=r[0], offsets=r[1], positive_group=r[2], positions=r[3],
                     memory_rank=r[4])
        fp = call_op("pass1", scores=scores, labels=labels, delta=DELTA, method="sorted",
                     **named)
        out = call_op("positive_stage", loss="ap_loss", false_positives=fp, delta=DELTA,
                      interpolate=True, loss_dtype=scores.dtype, method="sorted", **named)
        state, positive_grads = (out[2], out[3]) if len(out) == 4 else (out[1], out[2])
        return named, state, positive_grads

    for label_name in spec["labels"]:
        for p in spec["positives"]:
            tag = f"{label_name}/{p}"
            s, y = problems[label_name, p, 0]
            s_other, y_other = problems[label_name, p, 1]
            if stages:
                named_o, _, _ = ranking(s_other, y_other)
                named, state, pgrads = ranking(s, y)
                pass1 = lambda s=s, y=y, named=named: call_op(  # noqa: E731
                    "pass1", scores=s, labels=y, delta=DELTA, method="sorted", **named)
                pass1_other = lambda: call_op(  # noqa: E731
                    "pass1", scores=s_other, labels=y_other, delta=DELTA, method="sorted",
                    **named_o)
                pass2 = lambda s=s, y=y, named=named, state=state, pgrads=pgrads: call_op(  # noqa: E731
                    "pass2", grad_output=one, scores=s, labels=y, state=state,
                    classes=no_classes, offsets=named["offsets"], positive_grads=pgrads,
                    delta=DELTA, method="sorted")
                gather = lambda s=s, y=y: call_op("gather", scores=s, labels=y)  # noqa: E731
                # warm-up: every call once (first-call costs), then the measured calls
                gather(), pass1_other(), pass1(), pass2()
                measure(f"gather {tag}", gather)
                pass1_other()  # the index cache now holds another problem's index
                measure(f"pass1_build {tag}", pass1)
                measure(f"pass1_cached {tag}", pass1)
                # as in a real call: pass 1 and the positive stage of this problem before
                ranking(s, y)
                measure(f"pass2 {tag}", pass2)
                # the whole call, fwd then bwd, after another problem's forward
                call_op("forward", loss="ap_loss", scores=s_other, labels=y_other, delta=DELTA,
                        interpolate=True, method="sorted")
                fwd = forward_outputs(measure(f"fwd {tag}", lambda: call_op(
                    "forward", loss="ap_loss", scores=s, labels=y, delta=DELTA,
                    interpolate=True, method="sorted")))
                measure(f"bwd {tag}", lambda: call_op(
                    "pass2", grad_output=one, scores=s, labels=y, state=fwd[0],
                    offsets=fwd[1], positive_grads=fwd[2],
                    classes=fwd[3] if fwd[3] is not None else no_classes, delta=DELTA,
                    method="sorted"))
            else:
                forward = lambda s=s, y=y: call_op(  # noqa: E731
                    "forward", loss="ap_loss", scores=s, labels=y, delta=DELTA,
                    interpolate=True, method="sorted")
                loss, state = forward()[:2]  # warm-up
                backward = lambda s=s, y=y, state=state: call_op(  # noqa: E731
                    "ap_loss_backward", grad_output=one, scores=s, labels=y, state=state,
                    delta=DELTA, method="sorted")
                backward()
                forward_other = lambda: call_op(  # noqa: E731
                    "forward", loss="ap_loss", scores=s_other, labels=y_other, delta=DELTA,
                    interpolate=True, method="sorted")
                forward_other()
                measure(f"fwd {tag}", forward)
                measure(f"bwd {tag}", backward)
    cg.cg_dump(b"done")
    with open(spec["result"], "w") as f:
        json.dump({"file": where, "so": so_path, "so_sha": so_sha, "info": info}, f)


# ------------------------------------------------------------------------------ driver


def demangled_functions(so_path):
    out = subprocess.run(["nm", "-C", "--defined-only", so_path], capture_output=True,
                         text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "TtWw":
            names.add(parts[2])
    return names


def function_regex(prefix):
    """The function itself: prefix, one parameter list without parentheses inside, an
    optional ' const', nothing after (no lambdas inside it, no [clone] parts)."""
    return re.compile(re.escape(prefix) + r"\([^()]*\)( const)?$")


def resolve_roles(kind, names):
    roles, chosen = {}, {}
    for role, candidates in ROLES[kind].items():
        for prefix in candidates:
            rx = function_regex(prefix)
            found = sorted(n for n in names if rx.match(n))
            if found:
                roles[role] = rx
                chosen[role] = found[0]
                break
        else:
            roles[role] = None
            chosen[role] = None
    return roles, chosen


def parse_dump(path):
    """(desc trigger, part, total Ir, {function: inclusive Ir}) of one callgrind dump."""
    names, self_cost, call_cost = {}, {}, {}
    trigger, part, total = "", 0, 0
    fn = cfn = None
    in_call = False

    def name_of(text):
        m = re.match(r"\((\d+)\)(?: (.*))?$", text)
        if not m:
            return text
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names[m.group(1)]

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                fields = line.split()
                cost = int(fields[1]) if len(fields) > 1 else 0
                if in_call:
                    if cfn != fn:
                        call_cost[fn] = call_cost.get(fn, 0) + cost
                    in_call = False
                else:
                    self_cost[fn] = self_cost.get(fn, 0) + cost
            elif line.startswith("fn="):
                fn = name_of(line[3:])
            elif line.startswith("cfn="):
                cfn = name_of(line[4:])
            elif line.startswith("calls="):
                in_call = True
            elif line.startswith("desc: Trigger:"):
                trigger = line.split(":", 2)[2].strip()
            elif line.startswith("part:"):
                part = int(line.split(":", 1)[1])
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split(":", 1)[1].split()[0])
    inclusive = {f: self_cost.get(f, 0) + call_cost.get(f, 0)
                 for f in set(self_cost) | set(call_cost)}
    return trigger, part, total, inclusive


def phases_of(out_dir):
    """{label: [(total, inclusive) per dump of the call, in order]} from the dumps
    between the client requests 'begin <label>' and 'end <label>'."""
    dumps = []
    for path in glob.glob(os.path.join(out_dir, "callgrind.out*")):
        trigger, part, total, inclusive = parse_dump(path)
        dumps.append((part, trigger, total, inclusive))
    dumps.sort(key=lambda d: d[0])
    phases, current = {}, None
    for _, trigger, total, inclusive in dumps:
        m = re.match(r"Client Request: (begin|end) (.*)$", trigger)
        if m and m.group(1) == "begin":
            current = m.group(2)
            phases[current] = []
            continue
        if current is not None:
            phases[current].append((total, inclusive))
        if m and m.group(1) == "end":
            current = None
    return phases


def cost(phase, rx, which="all"):
    """Inclusive Ir of the functions matching rx in a phase: summed over its dumps, or
    in the first dump where they ran ('first')."""
    if rx is None:
        return None
    per_dump = [sum(v for f, v in inc.items() if f is not None and rx.match(f))
                for _, inc in phase]
    if which == "first":
        return next((v for v in per_dump if v), 0)
    return sum(per_dump)


def table(headers, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])


def fmt(x, n):
    return "n/a" if x is None else f"{x / n:.2f}"


def driver(args):
    script = os.path.abspath(__file__)
    benchmarks = os.path.abspath(args.benchmarks)
    if not os.path.isfile(os.path.join(benchmarks, "common", "inputs.py")):
        sys.exit(f"no common/inputs.py under {benchmarks} (--benchmarks)")
    for tool in ("valgrind", "nm", "cc"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH")
    import torch

    aploss_cuda, where, so_path = import_package(args.pythonpath)
    kind = "stages" if hasattr(torch.ops.aploss, "pass1") else "legacy"
    if kind == "legacy" and not hasattr(torch.ops.aploss, "ap_loss_forward"):
        sys.exit("neither the stage operators nor a forward operator: unknown build")
    names = demangled_functions(so_path)
    roles, chosen = resolve_roles(kind, names)
    missing = [r for r in ("gather", "pass1", "pass2") if roles[r] is None]
    if missing:
        sys.exit(f"no entry function found in {so_path} for {missing}")
    so_sha = file_sha(so_path)

    work = args.keep or tempfile.mkdtemp(prefix="callgrind_passes.")
    os.makedirs(work, exist_ok=True)
    for old in glob.glob(os.path.join(work, "callgrind.out*")):
        os.remove(old)
    helper = os.path.join(work, "cg_helper.so")
    src = os.path.join(work, "cg_helper.c")
    with open(src, "w") as f:
        f.write(HELPER_C)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", helper, src], check=True)

    positives = [max(1, args.n // d) for d in args.p_divisors]
    if args.scalar and not hasattr(aploss_cuda._C, "_set_cpu_vector_lanes"):
        sys.exit("--scalar: this build has no _set_cpu_vector_lanes (no AVX2 lanes)")
    spec = dict(pythonpath=args.pythonpath, benchmarks=benchmarks, helper=helper, kind=kind,
                scalar=args.scalar, seed=args.seed,
                n=args.n, positives=positives, labels=args.labels,
                result=os.path.join(work, "child.json"))
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
           f"--callgrind-out-file={os.path.join(work, 'callgrind.out')}"]
    if kind == "legacy":
        cmd.append(f"--dump-before={chosen['pass1']}")
    cmd += [sys.executable, script, "--child", json.dumps(spec)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.time()
    print(f"running: {' '.join(cmd[:-1])} '<spec>'", file=sys.stderr, flush=True)
    with open(os.path.join(work, "valgrind.log"), "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        sys.exit(f"the callgrind child failed (rc {rc}); see {work}/valgrind.log")
    elapsed = time.time() - start
    with open(spec["result"]) as f:
        meta = json.load(f)
    if os.path.realpath(meta["file"]) != where:
        sys.exit(f"the child imported {meta['file']}, the driver {where}")
    if meta["so_sha"] != so_sha or file_sha(so_path) != so_sha:
        sys.exit(f"{so_path} changed during the run (sha256 {so_sha}... before, "
                 f"{meta['so_sha']}... in the child, {file_sha(so_path)}... now): rerun")

    phases = phases_of(work)
    n = args.n
    rows, krows, raw = [], [], []
    for label_name in args.labels:
        for p in positives:
            tag = f"{label_name}/{p}"
            fwd, bwd = phases[f"fwd {tag}"], phases[f"bwd {tag}"]
            whole = sum(t for t, _ in fwd) + sum(t for t, _ in bwd)
            if kind == "stages":
                g, p1b, p1c, p2 = (phases[f"{x} {tag}"]
                                   for x in ("gather", "pass1_build", "pass1_cached", "pass2"))
                gather = cost(g, roles["gather"])
                pass1 = cost(p1b, roles["pass1"])
                pass1_cached = cost(p1c, roles["pass1"])
                index = cost(p1b, roles["index"])
                pass2 = cost(p2, roles["pass2"])
                kernels = (cost(g, roles["k_gather"]), cost(p1b, roles["k_pass1"]),
                           cost(p1c, roles["k_pass1"]), cost(p2, roles["k_pass2"]))
                extra = dict(index_in_pass1_cached=cost(p1c, roles["index"]),
                             index_in_pass2=cost(p2, roles["index"]),
                             phase_total={k: sum(t for t, _ in v) for k, v in
                                          (("gather", g), ("pass1_build", p1b),
                                           ("pass1_cached", p1c), ("pass2", p2))})
            else:
                gather = cost(fwd, roles["gather"])
                pass1 = cost(fwd, roles["pass1"], "first")
                # sums_from_differences of the entries call: the dump in which pass 1 ran
                first = next(i for i, (_, inc) in enumerate(fwd)
                             if any(f and roles["pass1"].match(f) for f in inc))
                pass1 += cost(fwd[first:first + 1], roles["pass1_sums"])
                index = cost(fwd[first:first + 1], roles["index"])
                pass1_cached = pass1 - index  # every call builds its index
                pass2 = cost(bwd, roles["pass2"])
                k1 = cost(fwd, roles["k_pass1"], "first")
                kernels = (cost(fwd, roles["k_gather"]), k1, k1 - index,
                           cost(bwd, roles["k_pass2"]))
                extra = dict(pass1_positives=cost(fwd[first + 1:], roles["pass1"]),
                             dumps_in_forward=len(fwd))
            total = gather + pass1 + pass2
            rows.append([label_name, n, p, fmt(gather, n), fmt(pass1, n), fmt(pass1_cached, n),
                         fmt(index, n), fmt(pass2, n), fmt(total, n), fmt(whole, n)])
            krows.append([label_name, n, p] + [fmt(x, n) for x in kernels]
                         + [fmt(kernels[0] + kernels[1] + kernels[3], n)])
            raw.append(dict(labels=label_name, n=n, p=p, gather=gather, pass1=pass1,
                            pass1_no_index_build=pass1_cached, index_build=index, pass2=pass2,
                            total=total, fwd_bwd_whole=whole, kernels=dict(
                                zip(("gather", "pass1", "pass1_no_index_build", "pass2"),
                                    kernels)), **extra))

    print(f"aploss_cuda: {where} ({kind} build; _C sha256 {so_sha}...)")
    print(f"info: cpu_vector_lanes={meta['info'].get('cpu_vector_lanes', 'n/a (not reported)')} "
          f"under valgrind{' (--scalar)' if args.scalar else ''}; torch {meta['info'].get('torch')}; one thread; float32 scores; "
          f"init regime, seed {args.seed}; callgrind {elapsed:.0f} s")
    print("entry functions: " + "; ".join(f"{r} = {chosen[r]}" for r in chosen if chosen[r]))
    print()
    print("Instructions per entry (Ir / N), the stage calls:")
    print()
    print(table(["labels", "N", "P", "gather", "pass 1", "pass 1 (index reused)",
                 "index build", "pass 2", "total", "fwd+bwd"], rows))
    print()
    print("Kernel functions only (aploss::cpu::*), Ir / N:")
    print()
    print(table(["labels", "N", "P", "gather", "pass 1", "pass 1 (no index build)", "pass 2",
                 "total"], krows))
    if kind == "legacy":
        print("\n(this build has no index cache: 'pass 1 (index reused)' is pass 1 less its "
              "index build)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(file=where, so=so_path, so_sha256=so_sha, kind=kind,
                           info=meta["info"], functions=chosen, rows=raw), f, indent=1)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=parse_count, default=1_000_000, help="entries (1M)")
    parser.add_argument("--p-divisors", default="1000",
                        type=lambda t: [parse_count(x) for x in t.split(",")],
                        help="P = N / each of these (1000; e.g. 1000,100 for 10x P too)")
    parser.add_argument("--labels", default=",".join(LABELS),
                        type=lambda t: [x.strip() for x in t.split(",")],
                        help="label dtypes (int64,int8)")
    parser.add_argument("--pythonpath", help="directory to put first on sys.path before "
                        "importing aploss_cuda (another build of the package)")
    parser.add_argument("--benchmarks", default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"),
        help="the benchmarks directory whose common/inputs.py makes the problems")
    parser.add_argument("--seed", type=int, default=0, help="make_problem's seed (0); the "
                        "problem that evicts the index cache uses seed + 1")
    parser.add_argument("--scalar", action="store_true", help="the CPU passes' scalar path "
                        "(_set_cpu_vector_lanes(False)) instead of the AVX2 lanes")
    parser.add_argument("--json", help="also write the raw counts here")
    parser.add_argument("--keep", help="keep the callgrind dumps and log in this directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
    else:
        driver(args)


if __name__ == "__main__":
    main()
