"""Peak extra memory of one call.

CUDA: torch.cuda.max_memory_allocated() over the call minus memory_allocated() before
it, after reset_peak_memory_stats(): every tensor the call allocates, at its peak.

CPU: the process's resident-set high-water mark (VmHWM) after the call minus its
resident set (VmRSS) before it, after returning freed memory to the system
(malloc_trim) and resetting the high-water mark (writing 5 to /proc/self/clear_refs,
Linux). torch's CPU allocator is malloc, so every byte the call touches counts, the
returned gradient included. None where /proc/self/clear_refs is not writable.
"""

import ctypes

import torch


def _status_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def _reset_cpu_peak():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: freed memory may still count as resident
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class PeakMemory:
    """meter.start(); call(); extra_bytes = meter.stop()"""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.available = True
        if self.cuda:
            self.method = ("torch.cuda.max_memory_allocated() over the call - "
                           "memory_allocated() before it")
            return
        self.method = ("VmHWM after the call - VmRSS before it, after malloc_trim(0) and a "
                       "reset of VmHWM through /proc/self/clear_refs")
        try:
            _reset_cpu_peak()
            _status_bytes("VmHWM")
        except OSError:
            self.available = False
            self.method = "not measured (/proc/self/clear_refs not writable)"

    def start(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        elif self.available:
            _reset_cpu_peak()
            self.base = _status_bytes("VmRSS")

    def stop(self):
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        if not self.available:
            return None
        return max(0, _status_bytes("VmHWM") - self.base)
