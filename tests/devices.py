"""Where a test body runs its kernels, so that one body serves every backend (the model
is torchvision's test_ops.py): the CPU kernels, the CUDA kernels on the emulated device
of tests/simt (every commit, no GPU needed), and the CUDA kernels on a real GPU when one
is present. A lent GPU therefore runs exactly the bodies CI runs.

    @pytest.mark.parametrize("target", TARGETS, ids=str)
    def test_something(target):
        with target.running():
            loss, grad = loss_and_grad(target.put(scores), target.put(labels))
"""

import contextlib
import dataclasses

import torch

import simt


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    tensor_device: str  # where the test's tensors live
    # The emulated device's configuration: (profile, thread order, block order, seed).
    emulation: tuple = ()

    def __str__(self):
        return self.name

    @property
    def emulated(self):
        return bool(self.emulation)

    @property
    def gpu(self):
        """A real GPU: the sizes that only a GPU runs in a moment, and float64 atomics that
        race (the sorted pass 1 may differ between runs in the last bits)."""
        return self.tensor_device == "cuda"

    def compiles(self, scores=torch.float32, labels=torch.int64):
        """Whether the target's kernels take these dtypes: the emulated device compiles a few
        (EMULATED_DTYPES), the CPU and a GPU all that the package accepts."""
        if not self.emulated:
            return True
        return scores in EMULATED_DTYPES["scores"] and labels in EMULATED_DTYPES["labels"]

    @property
    def profile(self):
        """The GPU whose limits the kernels see: 'h100' on a real GPU and on the CPU (for
        sizes only), or the emulated profile."""
        return self.emulation[0] if self.emulation else "h100"

    def put(self, tensor):
        return None if tensor is None else tensor.to(self.tensor_device)

    @contextlib.contextmanager
    def running(self):
        """Inside: CPU tensors run the emulated CUDA kernels (emulated targets only)."""
        if not self.emulation:
            yield None
            return
        with simt.emulated_device().active(*self.emulation) as device:
            yield device


# The dtypes the emulated device compiles (APLOSS_SIMT_FEW_DTYPES in csrc/aploss/dispatch.h):
# any other pair raises "not implemented" there.
EMULATED_DTYPES = {
    "scores": (torch.float64, torch.float32, torch.float16),
    "labels": (torch.bool, torch.int8, torch.int64),
}

CPU = Target("cpu", "cpu")
# Two thread orders and two block orders at least, on both profiles: "small" (3 SMs, 8 KiB
# of shared memory) reaches the global-memory variants and several grid-stride rounds
# at small N.
EMULATED = [
    Target("emulated-h100", "cpu", ("h100", "forward", "forward", 0)),
    Target("emulated-small-reverse", "cpu", ("small", "reverse", "reverse", 1)),
    Target("emulated-small-random", "cpu", ("small", "random", "random", 2)),
]
CUDA = [Target("cuda", "cuda")] if torch.cuda.is_available() else []
TARGETS = [CPU] + EMULATED + CUDA
# The CUDA kernels, emulated or real.
CUDA_KERNEL_TARGETS = EMULATED + CUDA

# Largest P whose pass 1 / pass 2 arrays fit a block's shared memory on each profile:
# pass 1 stages 4 P + 3 doubles, pass 2 3 (P + 1) (csrc/cuda/sorted_pass*_cuda.cu).
SHARED_LIMIT_P = {
    "h100": {"pass1": (227 * 1024 // 8 - 3) // 4, "pass2": 227 * 1024 // 8 // 3 - 1},
    "small": {"pass1": (8 * 1024 // 8 - 3) // 4, "pass2": 8 * 1024 // 8 // 3 - 1},
}
