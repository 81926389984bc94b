"""Test-only probes of the library's internals, compiled at test time (build.py, about
30 s once per source version) so that the library itself ships none:

    lo, hi, a = probes.find_windows(scores, positives, delta, indexed)
    lo, hi = probes.find_intervals(scores, positives, delta)
    hist = probes.pass1_differences(scores, labels, codes, positives, offsets, delta,
                                   deterministic)
    sums = probes.positive_window_sums(positives, offsets, keys, values, delta, below,
                                       transpose)

See window_probes.h, pass1_probe.h and csrc/aploss/kernels.h (positive_window_sums) for
what each returns.
"""

import functools

import torch

import aploss_cuda

from .build import compile_and_import


@functools.lru_cache(maxsize=None)
def extension():
    return compile_and_import()


def find_windows(scores, positives, delta, indexed):
    """math.h's window of every score: its plain binary search or its bucket-indexed one."""
    extension()
    return torch.ops.aploss_probes.find_windows(scores, positives, delta, indexed)


def find_intervals(scores, positives, delta):
    """intervals.h's interval of every score, in the scores' key type (float32 or float64)."""
    extension()
    return torch.ops.aploss_probes.find_intervals(scores, positives, delta)


def pass1_differences(scores, labels, codes, positives, offsets, delta, deterministic):
    """Pass 1's (3, P+1) difference arrays by the kernels that tensors on the scores'
    device run (on the CPU, the emulated device's while it is active): the kernel's own,
    or summed from its per-entry records (deterministic)."""
    table = extension().table_address(aploss_cuda._C._kernel_table(scores.device.type))
    return torch.ops.aploss_probes.pass1_differences(
        table, scores, labels, codes, positives, offsets, delta, deterministic
    )


def positive_window_sums(positives, offsets, keys, values, delta, below, transpose):
    """The kernel table's sums among the positives (csrc/aploss/kernels.h) of the
    positives' device, with any keys."""
    table = extension().table_address(aploss_cuda._C._kernel_table(positives.device.type))
    return torch.ops.aploss_probes.positive_window_sums(
        table, positives, offsets, keys, values, delta, below, transpose
    )
