"""The emulated CUDA device of the test suite (see simt.h and README.md in this folder).

    device = simt.emulated_device()          # builds once per source version (~30 s)
    with device.active(profile="small", threads="reverse", blocks="random", seed=1):
        loss = aploss_cuda.ap_loss(scores, labels)   # CPU tensors, CUDA kernels
"""

import contextlib
import functools

import aploss_cuda

from .build import compile_and_import


class EmulatedDevice:
    """CPU tensors run through the CUDA kernel table (compiled for the host) while
    `active()` holds; the driver, the host entry points' checks, grid sizing and variant
    choice run as on a GPU."""

    def __init__(self, module):
        self.module = module
        self._table = module.kernel_table()

    @contextlib.contextmanager
    def active(self, profile="h100", threads="forward", blocks="forward", seed=0):
        self.module.configure(profile, threads, blocks, seed)
        self.module.take_launch_log()
        aploss_cuda._C._set_emulated_device(self._table)
        try:
            yield self
        finally:
            aploss_cuda._C._set_emulated_device(None)

    def launches(self):
        """The launches since the last call: dicts of name, site, grid, block, dynamic_smem,
        static_smem, failed."""
        return self.module.take_launch_log()

    def host_reads(self):
        """Reads of tensor values by the emulated kernels' host code so far: each one a
        host synchronisation on a GPU (csrc/aploss/host_reads.h)."""
        return self.module.host_reads()

    def selftests(self):
        return self.module.selftests()

    def run_selftest(self, name, profile="h100", threads="forward", blocks="forward", seed=0):
        self.module.configure(profile, threads, blocks, seed)
        return self.module.run_selftest(name)


@functools.lru_cache(maxsize=None)
def emulated_device():
    return EmulatedDevice(compile_and_import())
