"""Builds the test suite's probes (this folder's .cpp files and the two library sources
they need) as a Python extension with torch.utils.cpp_extension, cached under
build/probes/ by a hash of every file it reads, as the emulated device is (../simt)."""

import glob
import os

from simt.build import CSRC, ROOT, fingerprint_of, kernels_abi, library_headers

HERE = os.path.dirname(os.path.abspath(__file__))

# Compiled here rather than taken from the library, which does not export them.
LIBRARY_SOURCES = [
    os.path.join(CSRC, "deterministic_pass1.cpp"),
    os.path.join(CSRC, "cpu", "interval_index_cpu.cpp"),
]


def sources():
    return sorted(glob.glob(os.path.join(HERE, "*.cpp"))) + LIBRARY_SOURCES


def compile_flags():
    # The ABI tag of the library's kernel table, so that its capsules are accepted.
    return ["-O2", f"-DAPLOSS_KERNELS_ABI={kernels_abi()}"]


def fingerprint():
    files = (
        library_headers()
        + glob.glob(os.path.join(HERE, "*.h"))
        + sources()
        + [os.path.abspath(__file__)]
    )
    return fingerprint_of(files, compile_flags())


def compile_and_import(verbose=False):
    """Builds (or reuses) the probes and imports them."""
    from torch.utils.cpp_extension import load

    name = f"aploss_probes_{fingerprint()}"
    build_dir = os.path.join(ROOT, "build", "probes", name)
    os.makedirs(build_dir, exist_ok=True)
    return load(
        name=name,
        sources=sources(),
        extra_include_paths=[CSRC, HERE],
        extra_cflags=compile_flags(),
        build_directory=build_dir,
        with_cuda=False,
        verbose=verbose,
    )
