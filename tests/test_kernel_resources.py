"""scripts/check_kernel_resources.py: its ptxas-report parser (on a captured sample), its
source parser (launch bounds, dynamic shared memory), its limits, and one real run on
two of the CUDA sources (skipped without nvcc)."""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "check_kernel_resources.py")

_spec = importlib.util.spec_from_file_location("check_kernel_resources", SCRIPT)
ckr = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ckr  # dataclasses look their module up here
_spec.loader.exec_module(ckr)

# `nvcc -cubin -gencode=arch=compute_90,code=sm_90 --resource-usage` on csrc/cuda/*.cu
# (CUDA 13.0), a few entries: a plain kernel, static shared memory, a spill.
PTXAS_SAMPLE = """\
ptxas info    : 28 bytes gmem
ptxas info    : Compiling entry function '_ZN6aploss3gpu47_GLOBAL__N__e3898e8a_14_gather_cuda_cu_62afd00916init_meta_kernelEPx' for 'sm_90'
ptxas info    : Function properties for _ZN6aploss3gpu47_GLOBAL__N__e3898e8a_14_gather_cuda_cu_62afd00916init_meta_kernelEPx
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 0 barriers
ptxas info    : Compile time = 0.877 ms
ptxas info    : Compiling entry function '_ZN6aploss3gpu49_GLOBAL__N__06be3bf0_16_pairwise_cuda_cu_8119cc7721pairwise_pass1_kernelIN3c108BFloat16EdEEvPKT_PKT0_lPKdldPd' for 'sm_90'
ptxas info    : Function properties for _ZN6aploss3gpu49_GLOBAL__N__06be3bf0_16_pairwise_cuda_cu_8119cc7721pairwise_pass1_kernelIN3c108BFloat16EdEEvPKT_PKT0_lPKdldPd
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 2048 bytes smem
ptxas info    : Compile time = 9.484 ms
ptxas info    : Compiling entry function '_ZN6aploss3gpu49_GLOBAL__N__06be3bf0_16_pairwise_cuda_cu_8119cc7721pairwise_pass2_kernelIN3c108BFloat16EdEEvPKT_PKT0_lPKdldSC_PS5_' for 'sm_90'
ptxas info    : Function properties for _ZN6aploss3gpu49_GLOBAL__N__06be3bf0_16_pairwise_cuda_cu_8119cc7721pairwise_pass2_kernelIN3c108BFloat16EdEEvPKT_PKT0_lPKdldSC_PS5_
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 46 registers, used 1 barriers, 4096 bytes smem
ptxas info    : Compile time = 22.805 ms
ptxas info    : Compiling entry function '_ZN6aploss3gpu53_GLOBAL__N__04caaa90_20_sorted_pass1_cuda_cu_70ee3a6719sorted_pass1_kernelIdlLb1EEEvPKT_PKT0_lPKdldPd' for 'sm_90'
ptxas info    : Function properties for _ZN6aploss3gpu53_GLOBAL__N__04caaa90_20_sorted_pass1_cuda_cu_70ee3a6719sorted_pass1_kernelIdlLb1EEEvPKT_PKT0_lPKdldPd
    16 bytes stack frame, 32 bytes spill stores, 24 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 16 bytes cumulative stack size
ptxas info    : Compile time = 20.162 ms
"""


def test_parse_ptxas_sample():
    got = [(r.registers, r.spill_stores, r.spill_loads, r.stack, r.smem)
           for r in ckr.parse_ptxas(PTXAS_SAMPLE)]
    assert got == [(8, 0, 0, 0, 0), (32, 0, 0, 0, 2048), (46, 0, 0, 0, 4096), (32, 32, 24, 16, 0)]
    assert ckr.parse_ptxas(PTXAS_SAMPLE)[0].mangled.endswith("16init_meta_kernelEPx")


def test_parse_ptxas_ignores_device_functions():
    # A non-inlined device function gets "Function properties" but is not an entry.
    log = PTXAS_SAMPLE.replace(
        "ptxas info    : 28 bytes gmem\n",
        "ptxas info    : Function properties for _Z6helperv\n"
        "    64 bytes stack frame, 64 bytes spill stores, 64 bytes spill loads\n")
    assert [(r.spill_stores, r.stack) for r in ckr.parse_ptxas(log)] == \
        [(0, 0), (0, 0), (0, 0), (32, 16)]


def test_split_name():
    assert ckr.split_name("aploss::gpu::(anonymous namespace)::init_meta_kernel(long long*)") == \
        ("init_meta_kernel", [])
    assert ckr.split_name(
        "void aploss::gpu::(anonymous namespace)::sorted_pass1_kernel<c10::BFloat16, double, false>"
        "(c10::BFloat16 const*, double const*, long, double const*, long, double, double*)") == \
        ("sorted_pass1_kernel", ["BFloat16", "double", "false"])
    assert ckr.split_name("void k<std::pair<int, float>, 3>(int)") == \
        ("k", ["pair<int, float>", "3"])


@pytest.mark.skipif(shutil.which("c++filt") is None, reason="c++filt (binutils) not installed")
def test_demangle_sample():
    resources = ckr.parse_ptxas(PTXAS_SAMPLE)
    ckr.demangle(resources)
    assert [ckr.split_name(r.demangled) for r in resources] == [
        ("init_meta_kernel", []),
        ("pairwise_pass1_kernel", ["BFloat16", "double"]),
        ("pairwise_pass2_kernel", ["BFloat16", "double"]),
        ("sorted_pass1_kernel", ["double", "long", "true"]),
    ]


HEADER = """
#define MY_EXTERN_SHARED(type, name) \\
  extern __shared__ type name[]
"""

SOURCE = """
constexpr int kBlock = 256;  // a comment
constexpr int64_t kBig = int64_t(1) << 9;
constexpr int kTwice = 2 * kBlock;

__global__ void tiny_kernel(long long* meta) { meta[0] = 0; }

template <typename T>
__global__ void __launch_bounds__(kBlock)
    tiled_kernel(const T* x, int n) {
  __shared__ double tile[kBlock];
}

template <typename T, bool kShared>
__global__ void __launch_bounds__(kBig, 2) dynamic_kernel(const T* x) {
  extern __shared__ double smem[];
}

__launch_bounds__(kTwice) __global__ void macro_dynamic_kernel(double* out) {
  MY_EXTERN_SHARED(double, smem);
  if (out) { out[0] = smem[0]; }
}

__global__ void __launch_bounds__(64) declared_kernel(int);
// __global__ void __launch_bounds__(kNowhere) commented_out_kernel(int);
"""


def parsed(source, header=HEADER):
    constants = ckr.int_constants(source)
    pattern = ckr.extern_shared_pattern([header])
    return {k.name: (k.block, k.bound_expr is not None, k.dynamic_smem)
            for k in ckr.parse_kernels(source, "x.cu", constants, pattern)}


def test_parse_kernels():
    assert parsed(SOURCE) == {
        "tiny_kernel": (1024, False, False),  # no bound: the hardware maximum
        "tiled_kernel": (256, True, False),
        "dynamic_kernel": (512, True, True),
        "macro_dynamic_kernel": (512, True, True),
    }


@pytest.mark.parametrize("bound", ["kNowhere", "kBlock / 0 + nope()", "kThreads"])
def test_unrecognised_launch_bound_fails(bound):
    source = ("template <int kThreads>\n"
              f"__global__ void __launch_bounds__({bound}) bad_kernel(int n) {{}}")
    with pytest.raises(ValueError, match="bad_kernel.*unrecognised launch bound"):
        parsed(source)


def test_eval_int():
    constants = {"kA": "256u", "kB": "static_cast<int>(kA) * 2", "kC": "(kB >> 1) + 0x10"}
    assert ckr.eval_int("kC", constants) == 272
    assert ckr.eval_int("int64_t(1) << 16", {}) == 65536


def decl(block=256, dynamic=False):
    return ckr.KernelDecl("k", "x.cu", block, str(block), dynamic)


def res(registers=32, stores=0, loads=0, smem=0):
    return ckr.Resources("_Z1kv", registers, stores, loads, 0, smem)


def kinds(r, k, max_spill=0):
    return [kind for kind, _, _ in ckr.problems(r, k, max_spill)]


def test_register_budget():
    assert kinds(res(registers=64), decl(1024)) == []  # 64 x 1024 = 65,536 exactly
    assert kinds(res(registers=65), decl(1024)) == ["registers"]
    # 65 x 1000 = 65,000 fits the plain product, but registers are allocated per warp in
    # 256s (65 x 32 -> 2,304) for 32 warps: 73,728.
    assert ckr.allocated_registers(65, 1000) == 73728
    assert kinds(res(registers=65), decl(1000)) == ["registers"]
    # 13 warps of 136 registers: 56,576 allocated, but the hardware check rounds the
    # warps up to 16 (4 sub-partitions): 69,632.
    assert ckr.allocated_registers(136, 13 * 32) == 69632
    assert kinds(res(registers=136), decl(13 * 32)) == ["registers"]
    assert kinds(res(registers=255), decl(256)) == []


def test_spill_threshold():
    assert kinds(res(stores=8, loads=8), decl()) == ["spills"]
    assert kinds(res(stores=0, loads=4), decl()) == ["spills"]
    assert kinds(res(stores=8, loads=8), decl(), max_spill=8) == []
    assert kinds(res(stores=16, loads=32), decl(), max_spill=16) == ["spills"]


def test_shared_memory_limits():
    assert kinds(res(smem=48 * 1024), decl()) == []
    assert kinds(res(smem=48 * 1024 + 1), decl()) == ["static smem"]
    # With dynamic shared memory the host requests at most opt-in - static.
    assert ckr.dynamic_smem_bound(4096, True) == 232448 - 4096
    assert ckr.dynamic_smem_bound(4096, False) == 0
    assert kinds(res(smem=4096), decl(dynamic=True)) == []
    assert kinds(res(smem=232448 + 8), decl(dynamic=True)) == ["static smem", "total smem"]


def test_table_and_failures_name_the_worst_instantiation():
    source = "csrc/cuda/gather_cuda.cu"  # any source file: the table only names it
    group = ckr.Group(ckr.KernelDecl("pass_kernel", source, 1024, "kBlock", True))
    for args, regs, spill in [(["float", "true"], 40, 0), (["double", "true"], 70, 16),
                              (["double", "false"], 46, 8)]:
        r = res(registers=regs, stores=spill, loads=spill)
        group.instances.append(ckr.Instance(r, args, ckr.problems(r, group.decl, 8)))
    table = ckr.render_table([group], 8)
    row = table.splitlines()[2]
    assert "`pass_kernel`" in row and "3 `<{float, double} × {true, false}>`" in row
    assert "70 at `<double, true>`" in row and "71,680 (73,728)" in row
    assert "16/16 at `<double, true>`; 2 of 3 spill" in row
    assert "232,448 (opt-in − static)" in row
    assert "**FAIL** (1 of 3)" in row
    lines = ckr.failure_lines([group])
    assert lines == [
        f"`pass_kernel<double, true>` ({source}): 70 registers x 1024 threads = 71,680 "
        "(73,728 allocated) > 65,536 registers per block (1 of 3 instantiations)",
        f"`pass_kernel<double, true>` ({source}): spills 16 B stored / 16 B loaded per "
        "thread > --max-spill-bytes 8 (1 of 3 instantiations)",
    ]


def test_real_sources_parse():
    """Every __global__ kernel of csrc/cuda has a block size the script can read."""
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    decls = ckr.source_kernels(sources)
    own = [k for path, kernels in decls.items() for k in kernels.values() if k.path == path]
    assert own and all(1 <= k.block <= 1024 for k in own)
    assert any(k.dynamic_smem for k in own)  # the sorted passes' shared-memory variants


SYNTHETIC_CU = """
constexpr int kWide = 1024;

// About 100 live doubles' worth of registers.
__device__ __forceinline__ double busy(const double* x) {
  double acc[48];
#pragma unroll
  for (int i = 0; i < 48; ++i) acc[i] = x[threadIdx.x + i * 1024];
#pragma unroll
  for (int j = 1; j < 6; ++j) {
#pragma unroll
    for (int i = 0; i < 48; ++i) acc[i] = acc[i] * acc[(i + j) % 48] + 1.0;
  }
  double s = 0.0;
#pragma unroll
  for (int i = 0; i < 48; ++i) s += acc[i];
  return s;
}

// No bound: taken at 1024 threads, which its registers do not fit.
__global__ void hungry_kernel(const double* x, double* y) { y[threadIdx.x] = busy(x); }

// Bounded at 1024 threads: ptxas caps it at 64 registers and spills the rest.
__global__ void __launch_bounds__(kWide) squeezed_kernel(const double* x, double* y) {
  y[threadIdx.x] = busy(x);
}

__global__ void __launch_bounds__(128) small_kernel(double* y) { y[threadIdx.x] = 1.0; }
"""


def find_nvcc():
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return shutil.which("nvcc") or next(iter(glob.glob("/usr/local/cuda*/bin/nvcc")), None)


MISSING = ("no CUDA toolkit (nvcc) to compile the kernels" if find_nvcc() is None
           else "c++filt (binutils) not installed" if shutil.which("c++filt") is None else None)
needs_toolkit = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=170)


@needs_toolkit
def test_end_to_end_synthetic_failures(tmp_path):
    """A kernel whose registers do not fit its (assumed) block fails, one that spills
    fails, a small one passes."""
    source = tmp_path / "synthetic.cu"
    source.write_text(SYNTHETIC_CU)
    p = run_script(str(source))
    assert p.returncode == 1, p.stdout + p.stderr
    failed = p.stdout.split("**FAILED:**")[1]
    assert re.search(r"`hungry_kernel` .*: \d+ registers x 1024 threads .* "
                     r"> 65,536 registers per block", failed)
    assert re.search(r"`squeezed_kernel` .*: spills [1-9]\d* B stored", failed)
    assert "small_kernel" not in failed
    assert "| 1024 (no `__launch_bounds__`: hw max) |" in p.stdout


@needs_toolkit
def test_end_to_end(tmp_path):
    """The real script on two sources (the whole set runs in CI, .ci/run): it compiles,
    finds every kernel of those files, writes the table, and fails exactly when it says so."""
    sources = [os.path.join(ROOT, "csrc", "cuda", f)
               for f in ("gather_cuda.cu", "pairwise_cuda.cu")]
    report = tmp_path / "resources.md"
    p = run_script(*sources, "--markdown", str(report))
    assert p.returncode in (0, 1), p.stdout + p.stderr
    text = report.read_text()
    assert text in p.stdout
    decls = ckr.source_kernels(sources)
    for path, kernels in decls.items():
        for k in kernels.values():
            if k.path == path:
                assert f"| `{k.name}` | {path} |" in text
    assert (p.returncode == 1) == ("**FAILED:**" in text) == ("**FAIL**" in text)


SASS_SAMPLE = """
	code for sm_90
		Function : _Z1kPKfPdi
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
                                                                          /* 0x000fe20000000800 */
        /*00a0*/                   F2F.F64.F32 R4, R2 ;                   /* 0x0000000200047310 */
        /*00b0*/                   FSETP.GT.AND P0, PT, R2, 3, PT ;       /* 0x404000000200780b */
        /*00c0*/                   DFMA R6, R4, R6, 1 ;                   /* 0x3ff000000406742b */
        /*00e0*/              @!P0 EXIT ;                                 /* 0x000000000000894d */
        /*0100*/                   REDG.E.ADD.F64.RN.STRONG.GPU desc[UR4][R2.64], R4 ;
        /*0110*/               @P1 DADD R4, R4, R6 ;
		Function : _Z2k2v
        /*0000*/                   FADD R1, R2, R3 ;
        /*0010*/                   DEPBAR.LE SB0, 0x0 ;
"""


def test_count_f64_sample():
    # D-opcodes and .F64 conversions, reductions and atomics, predicated or not; not DEPBAR.
    assert ckr.count_f64(SASS_SAMPLE) == {"_Z1kPKfPdi": 4, "_Z2k2v": 0}


def test_f64_cell_splits_float_and_double_scores():
    instances = []
    for args, f64 in [(["float", "true"], 0), (["c10::Half", "true"], 2), (["double", "true"], 9)]:
        r = res(registers=32, stores=0, loads=0)
        r.f64 = f64
        instances.append(ckr.Instance(r, args, []))
    assert ckr.f64_cell(instances) == "2 / 9"
    instances[0].res.f64 = -1  # not disassembled
    assert ckr.f64_cell(instances) == "n/a"
