"""Builds aploss_cuda._C: the C++ CPU kernels always, the CUDA kernels when a CUDA
toolkit and a CUDA build of torch are present (FORCE_CUDA=1 builds them without a GPU,
torchvision's convention; FORCE_CUDA=0 skips them). Builds against the torch installed
here (hence `pip install --no-build-isolation .`) and records its version beside _C, in
aploss_cuda/_build_info.py, for the import-time check in aploss_cuda/_extension.py."""

import glob
import hashlib
import os
import re
import shutil
import sys

from setuptools import setup


def find_cuda_home():
    """The toolkit root. Resolves an `nvcc` on PATH that is a wrapper script exec'ing
    the real one, which torch would otherwise mistake for the toolkit (its grandparent)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return root
    nvcc = shutil.which("nvcc")
    if nvcc:
        nvcc = os.path.realpath(nvcc)
        try:
            with open(nvcc, "rb") as f:
                head = f.read(4096)
        except OSError:
            head = b""
        if head.startswith(b"#!"):  # a wrapper script: follow the nvcc it runs
            for match in re.finditer(rb"(/\S+)/bin/nvcc\b", head):
                root = match.group(1).decode()
                if os.path.isfile(os.path.join(root, "bin", "nvcc")):
                    return root
        root = os.path.dirname(os.path.dirname(nvcc))
        if os.path.exists(os.path.join(root, "include", "cuda_runtime.h")):
            return root
    for root in sorted(glob.glob("/usr/local/cuda*"), reverse=True):
        if os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return root
    return None


cuda_home = find_cuda_home()
if cuda_home:
    os.environ["CUDA_HOME"] = cuda_home  # must be set before torch.utils.cpp_extension loads

ROOT = os.path.dirname(os.path.abspath(__file__))


def torch_missing_message(error):
    """Why the build stopped and what to run: the usual cause is pip's build isolation."""
    return f"""
aploss_cuda: cannot build: `import torch` failed ({error}).

aploss_cuda compiles against the torch it will be imported with: the torch installed in
the Python environment that runs the build. pip builds in an isolated environment without
it unless told not to. Install torch (if it is not installed yet), then build aploss_cuda
without build isolation:

    pip install torch
    pip install --no-build-isolation .    # . or the path to the aploss_cuda sources
"""


try:
    import torch  # noqa: E402
except ImportError as e:
    sys.exit(torch_missing_message(e))  # printed to stderr, which pip shows on failure
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def want_cuda():
    force = os.environ.get("FORCE_CUDA")
    if force == "0":
        return False
    have_toolkit = cuda_home is not None and torch.version.cuda is not None
    if force == "1":
        if not have_toolkit:
            raise RuntimeError(
                f"FORCE_CUDA=1 but no CUDA build of torch ({torch.__version__}) "
                f"or no CUDA toolkit (found: {cuda_home})"
            )
        return True
    return have_toolkit and torch.cuda.is_available()


def sources(*patterns):
    return sorted(
        os.path.relpath(path, ROOT)
        for pattern in patterns
        for path in glob.glob(os.path.join(ROOT, pattern))
    )


def kernels_abi():
    """Tags the kernel table's layout (csrc/aploss/kernels.h) and torch's version, so the
    test suite's emulated device (tests/simt) is refused if built from other sources."""
    with open(os.path.join(ROOT, "csrc", "aploss", "kernels.h"), "rb") as f:
        digest = hashlib.sha256(f.read() + torch.__version__.encode()).hexdigest()
    return "0x" + digest[:12]


def extension():
    # The C++ standard is torch's choice (C++20 for torch >= 2.13). at::parallel_for is
    # inlined into our code and runs serially unless we compile with OpenMP, like torch.
    # No FMA contraction: the CPU's vector lanes and its scalar path must round alike
    # whatever -march the compiler is given.
    cxx_flags = ["-O3", "-ffp-contract=off", f"-DAPLOSS_KERNELS_ABI={kernels_abi()}"]
    link_flags = []
    if sys.platform.startswith("linux"):
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    cpu_sources = sources("csrc/*.cpp", "csrc/cpu/*.cpp")
    if not want_cuda():
        return CppExtension(
            "aploss_cuda._C",
            cpu_sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    # The CUDA kernels live in csrc/cuda/*.cu; their .cpp siblings must not share a
    # basename with a .cu (they would collide in the ninja build).
    cuda_sources = sources("csrc/cuda/*.cu", "csrc/cuda/*.cpp")
    return CUDAExtension(
        "aploss_cuda._C",
        cpu_sources + cuda_sources,
        define_macros=[("APLOSS_WITH_CUDA", None)],
        extra_link_args=link_flags,
        extra_compile_args={
            "cxx": cxx_flags + ["-DAPLOSS_WITH_CUDA"],
            "nvcc": ["-O3", "-DAPLOSS_WITH_CUDA", f"-DAPLOSS_KERNELS_ABI={kernels_abi()}",
                     "--expt-relaxed-constexpr", "-lineinfo"],
        },
    )


BUILD_INFO = """\
# Written by setup.py when aploss_cuda._C was compiled: the torch it was compiled against,
# read on import (aploss_cuda/_extension.py) before the extension is loaded.
TORCH_VERSION = {torch_version!r}
TORCH_CUDA = {torch_cuda!r}
CUDA_KERNELS = {cuda_kernels!r}
SOURCE_DIR = {source_dir!r}
"""


class BuildExtensionRecordingTorch(BuildExtension.with_options(use_ninja=True)):
    """Builds _C, then writes aploss_cuda/_build_info.py beside it (into the wheel, or the
    source tree with --inplace) so an import can check the torch it runs with."""

    def run(self):
        super().run()
        (ext,) = self.extensions
        package_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
        os.makedirs(package_dir, exist_ok=True)
        with open(os.path.join(package_dir, "_build_info.py"), "w", encoding="utf-8") as f:
            f.write(BUILD_INFO.format(
                torch_version=str(torch.__version__),
                torch_cuda=torch.version.cuda,
                cuda_kernels=("APLOSS_WITH_CUDA", None) in ext.define_macros,
                source_dir=ROOT,
            ))


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtensionRecordingTorch},
)
