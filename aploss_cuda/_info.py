"""What this build of aploss_cuda can run, so users can tell why a tensor ran where it did."""

import torch

from . import _C


def info() -> dict:
    """Build and runtime facts: whether the CUDA kernels were compiled in, and usable."""
    cuda_compiled = bool(_C.cuda_compiled())
    return {
        "version": "0.1.0",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_kernels_compiled": cuda_compiled,
        "cuda_available": torch.cuda.is_available(),
        "cuda_kernels_usable": cuda_compiled and torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
