"""What this build of aploss_cuda can run, so users can tell why a tensor ran where it did."""

import torch

from . import _build_info, _C


def info() -> dict:
    """Build and runtime facts: the torch the kernels were compiled against, whether the
    CUDA kernels were compiled in, and whether they are usable here; whether the CPU passes
    run their common case in AVX2 lanes ('avx2') or entry by entry (None)."""
    from . import __version__  # here: the package has finished importing by now

    cuda_compiled = bool(_C.cuda_compiled())
    return {
        "version": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "built_with_torch": _build_info.TORCH_VERSION,
        "built_with_cuda": _build_info.TORCH_CUDA if _build_info.CUDA_KERNELS else None,
        "cuda_kernels_compiled": cuda_compiled,
        "cuda_available": torch.cuda.is_available(),
        "cuda_kernels_usable": cuda_compiled and torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_vector_lanes": _C.cpu_vector_lanes(),
    }
