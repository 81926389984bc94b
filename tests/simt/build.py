"""Builds the emulated CUDA device: every csrc/cuda/*.cu compiled by the host C++ compiler
against the SIMT layer in this folder, as a Python extension (torch.utils.cpp_extension).

The build is cached under build/simt/ by a hash of every file it reads (the kernels, the
headers they include, this layer, the flags and torch's version), so an edit of a kernel
is picked up by the next test run. APLOSS_SIMT_ASAN=1 builds it with AddressSanitizer
(see tests/simt/README.md for how to run it).
"""

import glob
import hashlib
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CSRC = os.path.join(ROOT, "csrc")


def asan_requested():
    return os.environ.get("APLOSS_SIMT_ASAN", "") not in ("", "0")


def kernel_sources():
    """The .cu files the GPU build compiles (setup.py), each compiled here as C++."""
    return sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))


def layer_sources():
    return sorted(glob.glob(os.path.join(HERE, "*.cpp")))


def kernels_abi():
    """As setup.py: the kernel table's layout and torch's version."""
    with open(os.path.join(CSRC, "aploss", "kernels.h"), "rb") as f:
        return "0x" + hashlib.sha256(f.read() + torch.__version__.encode()).hexdigest()[:12]


def compile_flags():
    flags = ["-O2", "-DAPLOSS_SIMT", "-DAPLOSS_SIMT_FEW_DTYPES", f"-DAPLOSS_KERNELS_ABI={kernels_abi()}",
             "-Wno-unknown-pragmas"]
    if asan_requested():
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1"]
    return flags


def library_headers():
    return glob.glob(os.path.join(CSRC, "**", "*.h"), recursive=True) + glob.glob(
        os.path.join(CSRC, "**", "*.cuh"), recursive=True
    )


def fingerprint_of(files, flags):
    """A build's cache key: the files it reads (paths and contents), its flags and torch's
    version."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(os.path.relpath(path, ROOT).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    digest.update(" ".join(flags).encode())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:12]


def fingerprint():
    files = (
        library_headers()
        + kernel_sources()
        + glob.glob(os.path.join(HERE, "**", "*.h"), recursive=True)
        + layer_sources()
        + [os.path.abspath(__file__)]
    )
    return fingerprint_of(files, compile_flags())


def check_asan_runtime():
    if not asan_requested():
        return
    with open("/proc/self/maps") as f:
        if "libasan" not in f.read():
            raise RuntimeError(
                "APLOSS_SIMT_ASAN=1 needs the AddressSanitizer runtime loaded first: run "
                'LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" '
                "ASAN_OPTIONS=detect_leaks=0 APLOSS_SIMT_ASAN=1 "
                'pytest tests/test_simt.py tests/test_devices.py -k "emulated or simt"'
                " (tests/simt/README.md)"
            )


def compile_and_import(verbose=False):
    """Builds (or reuses) the emulated device and imports it."""
    from torch.utils.cpp_extension import load

    check_asan_runtime()
    name = f"aploss_simt_{fingerprint()}" + ("_asan" if asan_requested() else "")
    build_dir = os.path.join(ROOT, "build", "simt", name)
    wrapper_dir = os.path.join(build_dir, "kernels")
    os.makedirs(wrapper_dir, exist_ok=True)
    # Each kernel file is included unchanged into a .cpp, so that the host compiler, not
    # nvcc, compiles it.
    wrappers = []
    for source in kernel_sources():
        wrapper = os.path.join(wrapper_dir, os.path.basename(source)[: -len(".cu")] + "_simt.cpp")
        text = f'#include "{source}"\n'
        if not os.path.exists(wrapper) or open(wrapper).read() != text:
            with open(wrapper, "w") as f:
                f.write(text)
        wrappers.append(wrapper)
    flags = compile_flags()
    return load(
        name=name,
        sources=wrappers + layer_sources(),
        extra_include_paths=[os.path.join(HERE, "include"), HERE],
        extra_cflags=flags,
        extra_ldflags=["-fsanitize=address"] if asan_requested() else [],
        build_directory=build_dir,
        with_cuda=False,
        verbose=verbose,
    )
