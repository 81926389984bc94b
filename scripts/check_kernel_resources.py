"""Static resource check of the CUDA kernels for sm_90 (H100/H200), from ptxas's report.

Compiles every csrc/cuda/*.cu to a cubin with the real build's flags plus
--resource-usage, reads per kernel instantiation: registers per thread, spill stores and
loads, stack frame and static shared memory, and fails (exit 1) when an instantiation
cannot launch or spills:

  * registers: the block's register allocation, as the hardware computes it, must fit
    the 65,536 registers an sm_90 SM gives one block;
  * spills: spill stores or loads above --max-spill-bytes (default 0);
  * static shared memory above 48 KiB (the most a kernel may declare statically);
  * static + the largest dynamic shared memory the host code can request above the
    sm_90 opt-in limit (227 KiB).

The block size of each kernel is read from its `__launch_bounds__(...)` in the source
(a literal or a `constexpr` integer of the file or a header); a kernel without one is
taken at 1024 threads, the hardware maximum. Needs nvcc and c++filt, no GPU.

  .venv/bin/python scripts/check_kernel_resources.py [--markdown FILE] [--max-spill-bytes N]
  .venv/bin/python scripts/check_kernel_resources.py --dry-run   # parse sources, print commands
"""

from __future__ import annotations

import argparse
import ast
import glob
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- sm_90 limits (CUDA C Programming Guide, "Technical Specifications per Compute
# Capability", and the toolkit's include/cuda_occupancy.h for the allocation rules) ------
ARCH = "sm_90"
REGS_PER_BLOCK = 65536      # 64 K 32-bit registers per SM, all usable by one block
MAX_REGS_PER_THREAD = 255
REG_ALLOC_UNIT = 256        # registers are allocated per warp in units of 256
SUB_PARTITIONS = 4          # the hardware check rounds a block's warps up to a multiple of 4
WARP = 32
MAX_BLOCK = 1024            # block size assumed for a kernel without __launch_bounds__
STATIC_SMEM_LIMIT = 48 * 1024
SMEM_OPTIN_LIMIT = 227 * 1024  # cudaDevAttrMaxSharedMemoryPerBlockOptin on H100/H200


# ---- source side: kernels, launch bounds, dynamic shared memory -------------------------

@dataclass
class KernelDecl:
    name: str
    path: str                  # relative to ROOT
    block: int                 # threads per block (launch bound, or MAX_BLOCK)
    bound_expr: str | None     # the __launch_bounds__ argument; None: no bound declared
    dynamic_smem: bool         # declares extern __shared__ (or through a macro)


_COMMENT_OR_STRING = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', re.S)
_CONSTEXPR_INT = re.compile(
    r"\bconstexpr\s+(?:(?:unsigned|signed|const|static|long|short|int|size_t|"
    r"u?int(?:8|16|32|64)_t|std::\w+)\s+)+(\w+)\s*=\s*([^;{}]+);")
_INT_TYPES = {"int", "unsigned", "long", "size_t", "int32_t", "int64_t", "uint32_t",
              "uint64_t", "static_cast"}


def strip_comments(text: str) -> str:
    """Blanks out comments (keeping line breaks), so commented-out code is not parsed."""
    def blank(m):
        s = m.group(0)
        return s if s.startswith('"') else re.sub(r"[^\n]", " ", s)
    return _COMMENT_OR_STRING.sub(blank, text)


def int_constants(text: str) -> dict:
    """`constexpr <integer type> kName = <expr>;` definitions: name -> expression text."""
    return {m.group(1): m.group(2).strip() for m in _CONSTEXPR_INT.finditer(strip_comments(text))}


def eval_int(expr: str, constants: dict, _depth: int = 0) -> int:
    """Evaluates a C++ integer constant expression made of literals, known constants,
    + - * / % << >> and casts such as int64_t(1) or static_cast<int>(x)."""
    if _depth > 20:
        raise ValueError(f"constant expression nests too deeply: {expr!r}")
    src = re.sub(r"\b(\d+)(?:[uU]?[lL]{0,2}|[lL]{1,2}[uU])\b", r"\1", expr.strip())
    src = re.sub(r"static_cast<[\w:\s]+>", "static_cast", src).replace("::", "_")

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in constants:
            return eval_int(constants[node.id], constants, _depth + 1)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        if isinstance(node, ast.BinOp):
            ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
                   ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: int(a / b),
                   ast.Mod: lambda a, b: a % b, ast.LShift: lambda a, b: a << b,
                   ast.RShift: lambda a, b: a >> b}
            if type(node.op) in ops:
                return ops[type(node.op)](ev(node.left), ev(node.right))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id.replace("std_", "") in _INT_TYPES and len(node.args) == 1):
            return ev(node.args[0])
        raise ValueError(f"not an integer constant expression: {expr!r}")

    try:
        return ev(ast.parse(src, mode="eval"))
    except (SyntaxError, ZeroDivisionError) as e:
        raise ValueError(f"not an integer constant expression: {expr!r}") from e


def _balanced(text: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index just past the bracket that closes the one at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_ch}{close_ch} at offset {start}")


EXTERN_SHARED = r"\bextern\s+__shared__\b"
_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)(?:\\\n|[^\n])*", re.M)  # with continuations
_TOKEN = re.compile(r"\s*(__launch_bounds__\s*\(|[\w:]+|\S)")


def extern_shared_pattern(texts: list) -> str:
    """Matches a declaration of dynamic shared memory: `extern __shared__`, or a use of a
    function-like macro whose definition expands to it (APLOSS_EXTERN_SHARED)."""
    macros = set()
    for text in texts:
        for m in _DEFINE.finditer(strip_comments(text)):
            if re.search(EXTERN_SHARED, m.group(0)):
                macros.add(m.group(1))
    return "|".join([EXTERN_SHARED] + [rf"\b{name}\s*\(" for name in sorted(macros)])


def parse_kernels(text: str, path: str, constants: dict,
                  dynamic_pattern: str = EXTERN_SHARED) -> list:
    """The __global__ kernel definitions of one source file. Raises ValueError for a
    __launch_bounds__ whose block size cannot be evaluated."""
    # Macro definitions are not declarations (a #define may spell `extern __shared__`).
    code = _DEFINE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), strip_comments(text))
    kernels, bodies = [], []
    for m in re.finditer(r"\b__global__\b", code):
        # The declaration head: from __global__ to the parameter list. A
        # __launch_bounds__ may come before __global__ too, on the same declaration.
        prefix = code[max(0, m.start() - 200):m.start()]
        pre = re.search(r"__launch_bounds__\s*\(([^;{}]*)\)\s*$", prefix)
        pos, bound_expr, name = m.end(), pre.group(1) if pre else None, None
        while name is None:
            tok = _TOKEN.match(code, pos)
            if tok is None:
                raise ValueError(f"{path}: cannot parse the __global__ declaration "
                                 f"at offset {m.start()}")
            word = tok.group(1)
            if word.startswith("__launch_bounds__"):
                end = _balanced(code, tok.end() - 1, "(", ")")
                bound_expr, pos = code[tok.end():end - 1], end
            elif re.fullmatch(r"\w+", word) and code[tok.end():].lstrip().startswith("("):
                name, pos = word, tok.end()
            else:
                pos = tok.end()
        params_start = code.index("(", pos)
        after = _balanced(code, params_start, "(", ")")
        nxt = re.compile(r"[^;{]*([;{])").match(code, after)
        if nxt.group(1) == ";":  # a forward declaration; the definition is parsed instead
            continue
        body_start = nxt.end() - 1
        body = code[body_start:_balanced(code, body_start, "{", "}")]
        bodies.append((body_start, body_start + len(body)))
        if bound_expr is None:
            block = MAX_BLOCK
        else:
            first = bound_expr.split(",")[0]  # (maxThreadsPerBlock[, minBlocksPerSM, ...])
            try:
                block = eval_int(first, constants)
            except ValueError as e:
                raise ValueError(f"{path}: kernel {name}: unrecognised launch bound "
                                 f"__launch_bounds__({bound_expr.strip()}): {e}") from None
            if not 1 <= block <= MAX_BLOCK:
                raise ValueError(f"{path}: kernel {name}: launch bound {block} "
                                 f"is not in 1..{MAX_BLOCK}")
        dynamic = re.search(dynamic_pattern, body) is not None
        kernels.append(KernelDecl(name, path, block, bound_expr and bound_expr.strip(), dynamic))
    # extern __shared__ outside every kernel body (file scope, or a device helper) may be
    # what a kernel indexes: count it against every kernel of the file.
    outside = code
    for start, end in reversed(bodies):
        outside = outside[:start] + outside[end:]
    if re.search(dynamic_pattern, outside):
        for k in kernels:
            k.dynamic_smem = True
    return kernels


def source_kernels(cu_files: list) -> dict:
    """{relative .cu path: {kernel name: KernelDecl}}, the kernels of headers included
    under each file's entry too (a template kernel in a header is instantiated there)."""
    headers = sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cuh"), recursive=True)
                     + glob.glob(os.path.join(ROOT, "csrc", "**", "*.h"), recursive=True))
    texts = {p: open(p, encoding="utf-8").read() for p in headers + list(cu_files)}
    header_constants = {}
    for h in headers:
        header_constants.update(int_constants(texts[h]))
    dynamic = extern_shared_pattern(list(texts.values()))
    header_kernels = {}
    for h in headers:
        for k in parse_kernels(texts[h], os.path.relpath(h, ROOT), header_constants, dynamic):
            header_kernels[k.name] = k
    result = {}
    for cu in cu_files:
        constants = dict(header_constants, **int_constants(texts[cu]))
        own = {k.name: k for k in
               parse_kernels(texts[cu], os.path.relpath(cu, ROOT), constants, dynamic)}
        result[os.path.relpath(cu, ROOT)] = dict(header_kernels, **own)
    return result


# ---- ptxas side ---------------------------------------------------------------------------

@dataclass
class Resources:
    mangled: str
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    smem: int = 0          # static shared memory, bytes
    demangled: str = ""
    f64: int = -1          # float64 instructions in its SASS (-1: not disassembled)


def parse_ptxas(log: str) -> list:
    """Resources of every entry function in ptxas's `--resource-usage` (-v) output."""
    entries, current, props_for = {}, None, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = entries.setdefault(m.group(1), Resources(m.group(1)))
            continue
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            props_for = m.group(1)  # an entry, or a non-inlined device function
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                      r"(\d+) bytes spill loads", line)
        if m and props_for in entries:
            r = entries[props_for]
            r.stack, r.spill_stores, r.spill_loads = map(int, m.groups())
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and current is not None:
            current.registers = int(m.group(1))
            smem = re.search(r"(\d+) bytes smem", line)
            current.smem = int(smem.group(1)) if smem else 0
            current = None
    return list(entries.values())


# ---- SASS side: float64 instructions -------------------------------------------------------

# A float64 instruction: a D-opcode (DADD, DMUL, DFMA, DSETP, DMNMX, ...) or one that
# converts, reduces or atomically adds float64 (F2F.F64.F32, I2F.F64, REDG...F64, ...).
_F64_OPCODE = re.compile(r"^(?:D(?:ADD|MUL|FMA|SETP|SET|MNMX|MMA)\b|\S*\.F64\b)")
_SASS_FUNCTION = re.compile(r"^\s*Function : (\S+)")
_SASS_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)")


def count_f64(sass: str) -> dict:
    """Float64 instructions per function of `cuobjdump -sass` output."""
    counts, current = {}, None
    for line in sass.splitlines():
        m = _SASS_FUNCTION.match(line)
        if m:
            current = m.group(1)
            counts[current] = 0
            continue
        m = _SASS_INSTRUCTION.match(line)
        if m and current is not None and _F64_OPCODE.match(m.group(1)):
            counts[current] += 1
    return counts


def find_cuobjdump(explicit: str | None) -> str | None:
    """--cuobjdump, else cuobjdump on PATH or in the toolkit, else the one of PyPI's
    nvidia-cuda-cuobjdump package (the Makefile installs it: this toolkit has none)."""
    if explicit:
        return explicit
    candidates = [shutil.which("cuobjdump"),
                  os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "cuobjdump")]
    try:
        import nvidia
        for base in nvidia.__path__:
            candidates += glob.glob(os.path.join(base, "cu*", "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in candidates if c and os.path.isfile(c)), None)


def demangle(resources: list) -> None:
    """Fills .demangled with one c++filt run for all names."""
    if not resources:
        return
    out = subprocess.run(["c++filt"], input="\n".join(r.mangled for r in resources),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    for r, name in zip(resources, out):
        r.demangled = name


def split_name(demangled: str):
    """'void ns::(anonymous namespace)::k<float, int, true>(float const*, ...)' ->
    ('k', ['float', 'int', 'true']). Plain (non-template) kernels give no arguments."""
    s = demangled.replace("(anonymous namespace)", "{anon}")
    s = re.sub(r"^void\s+", "", s)
    stop = min(i for i in (s.find("<"), s.find("("), len(s)) if i >= 0)
    base = s[:stop].split("::")[-1]
    args = []
    if stop < len(s) and s[stop] == "<":
        inner = s[stop + 1:_balanced(s, stop, "<", ">") - 1]
        depth, cur = 0, ""
        for ch in inner:
            if ch in "<(":
                depth += 1
            elif ch in ">)":
                depth -= 1
            if ch == "," and depth == 0:
                args.append(cur.strip())
                cur = ""
            else:
                cur += ch
        args.append(cur.strip())
    short = [re.sub(r"\b(?:c10|at|std)::", "", a) for a in args]
    return base, short


# ---- limits -------------------------------------------------------------------------------

def ceil_to(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def allocated_registers(regs: int, block: int) -> int:
    """Registers the hardware requires free for one block (cuda_occupancy.h,
    cudaOccMaxBlocksPerSMRegsLimit, "hardware check"): per warp regs x 32 rounded up to
    256, times the block's warps rounded up to the 4 sub-partitions."""
    per_warp = ceil_to(regs * WARP, REG_ALLOC_UNIT)
    warps = -(-block // WARP)
    return per_warp * ceil_to(warps, SUB_PARTITIONS)


def dynamic_smem_bound(static_smem: int, dynamic: bool) -> int:
    """The most dynamic shared memory the host code requests: max_dynamic_smem() in
    csrc/cuda/launch_config_cuda.cu is the opt-in limit minus the static part."""
    return max(SMEM_OPTIN_LIMIT - static_smem, 0) if dynamic else 0


def problems(r: Resources, k: KernelDecl, max_spill: int) -> list:
    """Why this instantiation fails: (kind, severity for picking the worst, message)."""
    out = []
    alloc = allocated_registers(r.registers, k.block)
    if r.registers > MAX_REGS_PER_THREAD or alloc > REGS_PER_BLOCK:
        out.append(("registers", alloc,
                    f"{r.registers} registers x {k.block} threads = {r.registers * k.block:,} "
                    f"({alloc:,} allocated) > {REGS_PER_BLOCK:,} registers per block"))
    spill = max(r.spill_stores, r.spill_loads)
    if spill > max_spill:
        out.append(("spills", spill, f"spills {r.spill_stores} B stored / {r.spill_loads} B "
                                     f"loaded per thread > --max-spill-bytes {max_spill}"))
    if r.smem > STATIC_SMEM_LIMIT:
        out.append(("static smem", r.smem,
                    f"static shared memory {r.smem:,} B > {STATIC_SMEM_LIMIT:,} B"))
    total = r.smem + dynamic_smem_bound(r.smem, k.dynamic_smem)
    if total > SMEM_OPTIN_LIMIT:
        out.append(("total smem", total,
                    f"static {r.smem:,} B + dynamic up to {total - r.smem:,} B of shared memory "
                    f"> the opt-in limit {SMEM_OPTIN_LIMIT:,} B"))
    return out


# ---- report -------------------------------------------------------------------------------

@dataclass
class Instance:
    res: Resources
    args: list       # template arguments, shortened
    problems: list   # problems(res, ...)


@dataclass
class Group:
    """The instantiations of one kernel template."""
    decl: KernelDecl
    instances: list = field(default_factory=list)


def fmt_args(args: list) -> str:
    return "<" + ", ".join(args) + ">" if args else ""


def summarize_args(arg_lists: list) -> str:
    """<{float, double} × {int, bool}>: the values each template parameter takes."""
    if not any(arg_lists):
        return ""
    columns = []
    for i in range(max(len(a) for a in arg_lists)):
        seen = list(dict.fromkeys(a[i] for a in arg_lists if i < len(a)))
        columns.append(seen[0] if len(seen) == 1 else "{" + ", ".join(seen) + "}")
    return "<" + " × ".join(columns) + ">"


def _max_at(instances: list, key) -> str:
    """The largest key over the instantiations, naming the one with it when they differ."""
    best = max(instances, key=key)
    varies = len({key(i) for i in instances}) > 1
    return f"{key(best):,}" + (f" at `{fmt_args(best.args)}`" if varies and best.args else "")


def render_table(groups: list, max_spill: int) -> str:
    rows = ["| kernel | file | instantiations | block | registers (max) "
            "| regs × block (allocated) | spills st/ld B | stack B | static smem B "
            "| dynamic smem bound B | float64 SASS (float / double scores) | verdict |",
            "|" + "---|" * 12]
    for g in groups:
        k, inst = g.decl, g.instances
        regs = max(i.res.registers for i in inst)
        block = f"{k.block}" if k.bound_expr else f"{k.block} (no `__launch_bounds__`: hw max)"
        spilling = [i for i in inst if i.res.spill_stores or i.res.spill_loads]
        if spilling:
            worst = max(spilling, key=lambda i: max(i.res.spill_stores, i.res.spill_loads))
            spills = (f"{worst.res.spill_stores}/{worst.res.spill_loads} "
                      f"at `{fmt_args(worst.args)}`"
                      f"; {len(spilling)} of {len(inst)} spill")
        else:
            spills = "0/0"
        smem = max(i.res.smem for i in inst)
        dynamic = (f"{dynamic_smem_bound(smem, True):,} (opt-in − static)"
                   if k.dynamic_smem else "0")
        f64 = f64_cell(inst)
        failing = [i for i in inst if i.problems]
        verdict = (f"**FAIL** ({len(failing)} of {len(inst)})" if failing
                   else f"ok (spills ≤ {max_spill})" if spilling else "ok")
        rows.append(" | ".join([
            f"| `{k.name}`", k.path, f"{len(inst)} `{summarize_args([i.args for i in inst])}`"
            if inst[0].args else "1",
            block, _max_at(inst, lambda i: i.res.registers),
            f"{regs * k.block:,} ({allocated_registers(regs, k.block):,})", spills,
            _max_at(inst, lambda i: i.res.stack), _max_at(inst, lambda i: i.res.smem),
            dynamic, f64, verdict]) + " |")
    return "\n".join(rows)


def f64_cell(instances: list) -> str:
    """The most float64 instructions of an instantiation for float32 / float16 / bfloat16
    scores (no `double` among its template arguments) and for float64 ones."""
    if any(i.res.f64 < 0 for i in instances):
        return "n/a"
    narrow = [i.res.f64 for i in instances if "double" not in fmt_args(i.args)]
    wide = [i.res.f64 for i in instances if "double" in fmt_args(i.args)]
    return f"{max(narrow) if narrow else '—'} / {max(wide) if wide else '—'}"


def failure_lines(groups: list) -> list:
    """One line per kernel template and kind of problem: its worst instantiation."""
    lines = []
    for g in groups:
        by_kind = {}
        for inst in g.instances:
            for kind, severity, message in inst.problems:
                by_kind.setdefault(kind, []).append((severity, inst, message))
        for hits in by_kind.values():
            _, inst, message = max(hits, key=lambda h: h[0])
            more = (f" ({len(hits)} of {len(g.instances)} instantiations)"
                    if len(g.instances) > 1 else "")
            lines.append(f"`{g.decl.name}{fmt_args(inst.args)}` ({g.decl.path}): {message}{more}")
    return lines


# ---- build flags and the compile ----------------------------------------------------------

def real_extension():
    """The Extension setup.py builds with FORCE_CUDA=1: setup.py is run with setup()
    stubbed out, so its flags, defines and include paths are the real build's."""
    import setuptools
    captured, saved_setup, saved_force = {}, setuptools.setup, os.environ.get("FORCE_CUDA")
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    os.environ["FORCE_CUDA"] = "1"
    try:
        runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="setup")
    finally:
        setuptools.setup = saved_setup
        if saved_force is None:
            del os.environ["FORCE_CUDA"]
        else:
            os.environ["FORCE_CUDA"] = saved_force
    (extension,) = captured["ext_modules"]
    return extension


def torch_cxx_std() -> str:
    """The -std= torch's BuildExtension gives nvcc (hardcoded in cpp_extension.py)."""
    import torch.utils.cpp_extension as ext
    found = re.findall(r"-std=(c\+\+\d+)", open(ext.__file__, encoding="utf-8").read())
    if not found:
        raise SystemExit("check_kernel_resources: cannot find torch's C++ standard")
    return max(set(found), key=found.count)


def compile_flags() -> list:
    """nvcc flags of the real build (build.ninja's cuda_cflags and cuda_post_cflags), less
    the host-only and -gencode ones."""
    extension = real_extension()  # first: it sets CUDA_HOME, which cpp_extension reads on import
    import torch.utils.cpp_extension as ext
    includes = [os.path.join(ROOT, "csrc")] + list(extension.include_dirs) + [
        sysconfig.get_paths()["include"]]
    defines = [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in extension.define_macros]
    flags = (defines + list(ext.COMMON_NVCC_FLAGS) + list(extension.extra_compile_args["nvcc"])
             + ["-DTORCH_API_INCLUDE_EXTENSION_H",
                f"-DTORCH_EXTENSION_NAME={extension.name.split('.')[-1]}",
                f"-std={torch_cxx_std()}"])
    return [f"-I{p}" for p in dict.fromkeys(includes)] + list(dict.fromkeys(flags))


def compile_command(nvcc: str, flags: list, source: str, cubin: str) -> list:
    arch = ARCH.split("_")[1]
    return ([nvcc, "-cubin", f"-gencode=arch=compute_{arch},code={ARCH}", "--resource-usage"]
            + flags + [source, "-o", cubin])


def compile_all(commands: list, jobs: int) -> list:
    """Runs the compiles in parallel; returns their combined output, in order."""
    def run(cmd):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"check_kernel_resources: compile failed ({p.returncode}):\n"
                             f"{shlex.join(cmd)}\n{p.stdout}{p.stderr}")
        return p.stdout + p.stderr
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run, commands))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="*", help="the .cu files (default: csrc/cuda/*.cu)")
    ap.add_argument("--max-spill-bytes", type=int, default=0,
                    help="largest spill (stores or loads, bytes per thread) that passes "
                         "(default 0)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the report here")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    ap.add_argument("--nvcc", help="the nvcc to run (default: <CUDA home>/bin/nvcc)")
    ap.add_argument("--cuobjdump", help="the cuobjdump that disassembles the cubins for the "
                                        "float64 column (default: found, else none)")
    ap.add_argument("--dry-run", action="store_true",
                    help="parse the sources' kernels and print the compile commands; "
                         "compile nothing")
    args = ap.parse_args(argv)
    started = time.monotonic()

    sources = [os.path.abspath(s) for s in args.sources] or \
        sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    try:
        decls = source_kernels(sources)
    except ValueError as e:
        print(f"check_kernel_resources: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        for path, kernels in decls.items():
            for k in kernels.values():
                if k.path == path:
                    bound = (f"__launch_bounds__({k.bound_expr})" if k.bound_expr
                             else "no __launch_bounds__: the maximum assumed")
                    print(f"{path}: {k.name}: block {k.block} ({bound})"
                          f"{', dynamic shared memory' if k.dynamic_smem else ''}")

    try:
        flags = compile_flags()  # runs setup.py, which finds the toolkit (CUDA_HOME)
    except RuntimeError as e:  # setup.py with FORCE_CUDA=1 and no toolkit
        print(f"check_kernel_resources: cannot set up the CUDA build: {e}", file=sys.stderr)
        return 0 if args.dry_run else 2
    nvcc = args.nvcc or os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
    if not args.dry_run and not (os.path.isfile(nvcc) and shutil.which("c++filt")):
        print(f"check_kernel_resources: needs nvcc ({nvcc}) and c++filt", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kernel-resources-") as tmp:
        commands = [compile_command(nvcc, flags, src, os.path.join(tmp, f"{i}.cubin"))
                    for i, src in enumerate(sources)]
        if args.dry_run:
            for cmd in commands:
                print("[dry-run]", shlex.join(cmd))
            return 0
        jobs = max(1, min(args.jobs, len(commands)))
        logs = compile_all(commands, jobs)
        cuobjdump = find_cuobjdump(args.cuobjdump)
        f64 = {}
        for cmd in commands if cuobjdump else []:
            p = subprocess.run([cuobjdump, "-sass", cmd[-1]], capture_output=True, text=True)
            if p.returncode != 0:  # e.g. no nvdisasm beside it: the column says n/a
                print(f"check_kernel_resources: {cuobjdump} -sass failed: {p.stderr.strip()}",
                      file=sys.stderr)
                cuobjdump, f64 = None, {}
                break
            f64.update(count_f64(p.stdout))

    groups, unknown = {}, []
    for src, log in zip(sources, logs):
        resources = parse_ptxas(log)
        demangle(resources)
        kernels = decls[os.path.relpath(src, ROOT)]
        for r in resources:
            base, targs = split_name(r.demangled)
            decl = kernels.get(base)
            if decl is None:
                unknown.append(f"{os.path.relpath(src, ROOT)}: {r.demangled}")
                continue
            group = groups.setdefault((decl.path, decl.name), Group(decl))
            r.f64 = f64.get(r.mangled, -1)
            # A kernel of a header is compiled again in every file that instantiates it.
            if all(i.res.mangled != r.mangled for i in group.instances):
                group.instances.append(Instance(r, targs, problems(r, decl, args.max_spill_bytes)))
    if unknown:
        print("check_kernel_resources: no __global__ definition found for:\n  "
              + "\n  ".join(unknown), file=sys.stderr)
        return 1

    ordered = sorted(groups.values(), key=lambda g: (g.decl.path, g.decl.name))
    failures = failure_lines(ordered)
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    release = re.search(r"release [^\n]*", version)
    python = os.path.relpath(sys.executable, ROOT)
    command = [python if not python.startswith("..") else "python",
               os.path.relpath(os.path.abspath(__file__), ROOT)] + \
        (sys.argv[1:] if argv is None else list(argv))
    report = "\n".join([
        f"# Kernel resources, {ARCH} (ptxas --resource-usage)",
        "",
        f"Command: `{shlex.join(command)}`  ",
        f"nvcc {release.group(0) if release else '(unknown version)'}: "
        f"{len(ordered)} kernels, {sum(len(g.instances) for g in ordered)} instantiations "
        f"from {len(sources)} source(s), checked in {time.monotonic() - started:.0f} s "
        f"({jobs} nvcc in parallel).",
        "",
        render_table(ordered, args.max_spill_bytes),
        "",
        f"Limits, per instantiation: registers per block as the hardware allocates them "
        f"(per warp: registers x 32 rounded up to {REG_ALLOC_UNIT}; warps rounded up to "
        f"{SUB_PARTITIONS}; cuda_occupancy.h) <= {REGS_PER_BLOCK:,}; spill stores and loads "
        f"<= {args.max_spill_bytes} B per thread; static shared memory <= "
        f"{STATIC_SMEM_LIMIT:,} B; static + dynamic <= {SMEM_OPTIN_LIMIT:,} B (the sm_90 "
        "opt-in limit; kernels with dynamic shared memory may request opt-in − static, "
        "max_dynamic_smem in csrc/cuda/launch_config_cuda.cu). Columns give the maximum "
        "over the instantiations, and the instantiation with it where they differ. "
        "float64 SASS: the float64 instructions (D-opcodes, .F64 conversions, reductions "
        "and atomics) in the kernel's machine code "
        + (f"(`{os.path.basename(cuobjdump)} -sass`), the most of an instantiation for "
           "float32, float16 or bfloat16 scores / for float64 scores; where each one is: "
           "docs/algorithm.md, section 9." if cuobjdump else "(n/a: no cuobjdump found)."),
        "",
        ("**FAILED:**\n\n" + "\n".join(f"- {f}" for f in failures)) if failures
        else "All kernels pass.",
        "",
    ])
    print(report)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(report)
    if failures:
        print(f"check_kernel_resources: FAILED, {len(failures)} problem(s) above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
