"""Writes OUTDIR/summary.md from the logs scripts/gpu_check.sh left in OUTDIR: device,
torch, build, pass/fail counts, sanitizer error counts, step timings, benchmark tables."""

import glob
import os
import re
import sys
import xml.etree.ElementTree as ET


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def step_timings(outdir):
    rows = {}
    for line in (read(os.path.join(outdir, "timings.tsv")) or "").splitlines():
        name, rc, seconds = line.split("\t")
        rows[name] = (int(rc), int(seconds))
    return rows


def rc_text(rc):
    return {0: "ok", 124: "TIMED OUT", 137: "KILLED (time limit)"}.get(rc, f"exit {rc}")


def test_counts(outdir):
    """(counts, failures) from the JUnit XML, or None when pytest wrote none."""
    path = os.path.join(outdir, "junit.xml")
    if not os.path.exists(path):
        return None, []
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    failures = []
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            for kind in ("failure", "error"):
                node = case.find(kind)
                if node is not None:
                    message = (node.get("message") or "").strip().splitlines()
                    name = f"{case.get('classname')}::{case.get('name')}"
                    failures.append(f"{kind}: `{name}`: {message[0][:200] if message else ''}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts, failures


def skip_reasons(outdir):
    """Distinct skip reasons from pytest's -rs lines, with counts."""
    reasons = {}
    for line in (read(os.path.join(outdir, "tests.log")) or "").splitlines():
        m = re.match(r"SKIPPED \[(\d+)\] [^:]+:\d+: (.*)", line)
        if m:
            reasons[m.group(2)] = reasons.get(m.group(2), 0) + int(m.group(1))
    return reasons


def sanitizer_result(text):
    """(errors, pytest's last line) of one compute-sanitizer log."""
    if text is None:
        return None, "no log"
    errors = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) error", text)]
    hazards = [int(n) for n in re.findall(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) error", text)]
    total = sum(errors) + sum(hazards) if (errors or hazards) else None
    tail = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed).* in [\d.]+s", line)]
    return total, tail[-1].strip("= ") if tail else "pytest printed no result line"


def main(outdir):
    timings = step_timings(outdir)
    env = (read(os.path.join(outdir, "environment.txt")) or "").strip()
    info = (read(os.path.join(outdir, "info.log")) or "").strip().splitlines()
    lines = ["# GPU check (scripts/gpu_check.sh)", "", "## Machine", "", "```", env, "```", ""]
    lines += ["## Steps", "", "| step | result | seconds |", "|---|---|--:|"]
    for name, (rc, seconds) in timings.items():
        lines.append(f"| {name} | {rc_text(rc)} | {seconds} |")
    lines += ["", f"`aploss_cuda.info()`: `{info[-1] if info else 'not importable'}`", ""]

    for name in ("error-paths-first-compiler", "error-paths"):
        text = read(os.path.join(outdir, f"{name}.log"))
        if text:
            lines += [f"### {name}", "", "```", text.strip(), "```", ""]

    counts, failures = test_counts(outdir)
    lines += ["## Test suite", ""]
    if counts is None:
        # pytest -v lines: "tests/x.py::t PASSED", or "[gw0] [ 6%] PASSED tests/x.py::t" (xdist)
        log = read(os.path.join(outdir, "tests.log")) or ""
        pattern = r"^(?:(tests/\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)|\[gw\d+\].*?(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (tests/\S+))"
        outcomes = [(m[1] or m[2], m[0] or m[3]) for m in re.findall(pattern, log, re.M)]
        tally = {}
        for outcome, _ in outcomes:
            tally[outcome] = tally.get(outcome, 0) + 1
        lines.append(f"pytest wrote no JUnit report (stopped?); tests.log shows: {tally}")
        lines += [f"- {o}: `{name}`" for o, name in outcomes if o in ("FAILED", "ERROR")][:60]
    else:
        lines.append(
            f"{counts['tests']} tests: {counts['passed']} passed, {counts['failures']} failed, "
            f"{counts['errors']} errors, {counts['skipped']} skipped."
        )
        if failures:
            lines += ["", "Failures:", ""] + [f"- {f}" for f in failures[:60]]
            if len(failures) > 60:
                lines.append(f"- ... and {len(failures) - 60} more (junit.xml)")
        reasons = skip_reasons(outdir)
        if reasons:
            lines += ["", "Skipped, by reason:", ""]
            lines += [f"- {n} x {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    lines += ["", "## compute-sanitizer (our kernels only, a quick subset of tests/test_cuda.py)", ""]
    logs = sorted(glob.glob(os.path.join(outdir, "sanitizer-*.log")))
    if not logs:
        lines.append("not run")
    else:
        lines += ["| tool | errors | tests under the tool |", "|---|--:|---|"]
        for path in logs:
            tool = os.path.basename(path)[len("sanitizer-"):-len(".log")]
            errors, tail = sanitizer_result(read(path))
            lines.append(f"| {tool} | {'?' if errors is None else errors} | {tail} |")
    lines += ["", "## Benchmark (benchmarks/run.py --device cuda --quick --retinanet on)", ""]
    reports = sorted(glob.glob(os.path.join(outdir, "bench", "*.md")))
    if reports:
        for path in reports:
            lines += [f"### {os.path.basename(path)}", "", read(path).strip(), ""]
    else:
        bench_log = (read(os.path.join(outdir, "bench.log")) or "no log").strip().splitlines()
        lines += ["No report written; the log's end:", "", "```"] + bench_log[-40:] + ["```"]
    lines += ["", "## Kernel times (scripts/gpu_kernel_times.py)", ""]
    kernel_times = read(os.path.join(outdir, "kernel-times.md"))
    if kernel_times:
        lines += [kernel_times.strip().split("\n", 1)[-1].strip(), ""]
    else:
        log = (read(os.path.join(outdir, "kernel-times.log")) or "no log").strip().splitlines()
        lines += ["Not written; the log's end:", "", "```"] + log[-40:] + ["```"]
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
