"""What one call of a loss costs a GPU whatever N is, counted: device launches, host
synchronisations, allocations (tests/test_launch_budget.py).

On the emulated CUDA device (every commit, no GPU):

- our kernels: the emulated device's launch log;
- ATen ops: torch.profiler's CPU events (the emulated device runs the CUDA kernel table's
  host code on CPU tensors, so every ATen op it issues is there). Each op that launches
  a kernel on a GPU counts once, sorts and scans as many kernels as CUB launches for
  them; views, metadata, allocations and reads of a value do not launch one (LAUNCH_FREE);
- host synchronisations: the reads through csrc/aploss/host_reads.h, of the extension and
  of the emulated device, and the ATen ops that read a device value on the host (SYNCING);
- allocations: the tensors allocated during the call (the profiler's allocating ATen ops).

On a GPU: kernel launches and allocations from the profiler's CUDA activity and the
caching allocator's counters, synchronisations from torch's sync debug mode.
"""

import collections
import dataclasses
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

import aploss_cuda

# ATen ops that launch no kernel on a GPU: views and metadata, allocation, reads of a value
# on the host (counted as synchronisations instead), and composites whose work shows up as
# child ops.
LAUNCH_FREE = {
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::view", "aten::narrow",
    "aten::slice", "aten::select", "aten::as_strided", "aten::reshape", "aten::_reshape_alias",
    "aten::expand", "aten::t", "aten::transpose", "aten::unsqueeze", "aten::squeeze",
    "aten::alias", "aten::detach", "aten::detach_", "aten::resize_", "aten::lift_fresh",
    "aten::contiguous", "aten::to", "aten::_to_copy", "aten::unbind", "aten::permute",
    "aten::_unsafe_view", "aten::flatten", "aten::split", "aten::chunk", "aten::result_type",
    "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::view_as",
    "aten::is_same_size", "aten::set_", "aten::numpy_T", "aten::dim", "aten::size",
}
# ATen ops that wait for the device: they read a value on the host (a scalar, a size that
# depends on the data).
SYNCING = {"aten::_local_scalar_dense", "aten::equal", "aten::is_nonzero", "aten::nonzero",
           "aten::bincount", "aten::_unique2", "aten::unique_consecutive", "aten::unique_dim",
           "aten::masked_select", "aten::repeat_interleave"}
# ATen ops that launch several kernels on a GPU (CUB's radix sort and scans), at least.
MULTI_LAUNCH = {"aten::sort": 4, "aten::argsort": 4, "aten::cumsum": 2, "aten::_unique2": 6,
                "aten::unique_consecutive": 4, "aten::nonzero": 3, "aten::bincount": 3}


@dataclasses.dataclass
class CallCost:
    kernels: collections.Counter  # our kernels by name
    aten: collections.Counter  # ATen ops that launch kernels, by name, weighted
    host_syncs: int
    allocations: int
    allocation_bytes: list  # bytes of each allocation

    @property
    def launches(self):
        return sum(self.kernels.values()) + sum(self.aten.values())

    def large_allocations(self, n_bytes):
        return sorted(b for b in self.allocation_bytes if b >= n_bytes)

    def __str__(self):
        return (f"{self.launches} launches (ours {dict(self.kernels)}, ATen {dict(self.aten)}), "
                f"{self.host_syncs} host syncs, {self.allocations} allocations")


def _aten_launches(events):
    """ATen ops that launch kernels: the deepest counted op of each chain (a composite op
    counts through its children, unless it is a MULTI_LAUNCH op, which counts itself)."""
    counted = collections.Counter()

    def visit(event, inside_multi):
        name = event.name
        counts_here = name.startswith("aten::") and name not in LAUNCH_FREE
        if name in MULTI_LAUNCH and not inside_multi:
            counted[name] += MULTI_LAUNCH[name]
            inside_multi = True
        found = False
        # Through every child: an ATen op may sit under one of ours (aploss::loss_forward
        # under aploss::loss) or under the autograd engine's events.
        for child in event.cpu_children:
            found = visit(child, inside_multi) or found
        if counts_here and not found and not inside_multi:
            counted[name] += 1
            return True
        return found or (counts_here and inside_multi) or name in MULTI_LAUNCH

    for event in events:
        if event.cpu_parent is None:
            visit(event, False)
    return counted


def emulated_cost(device, call):
    """`call()` (forward and backward of one loss on CPU tensors) on the emulated device,
    which must be active; its first run is not counted (one-time set-up)."""
    call()
    device.launches()
    reads_before = aploss_cuda._C._host_reads() + device.host_reads()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    kernels = collections.Counter(r["name"] for r in device.launches())
    events = prof.events()
    allocation_bytes = [
        e.cpu_memory_usage for e in events
        if e.name in ("aten::empty", "aten::empty_strided") and e.cpu_memory_usage > 0
        and not any(c.name.startswith("aten::") for c in e.cpu_children)
    ]
    return CallCost(
        kernels=kernels,
        aten=_aten_launches(events),
        host_syncs=aploss_cuda._C._host_reads() + device.host_reads() - reads_before
        + sum(e.name in SYNCING for e in events),
        allocations=len(allocation_bytes),
        allocation_bytes=allocation_bytes,
    )


def gpu_cost(call):
    """`call()` on a real GPU: kernels and memcpys from the profiler's CUDA activity, syncs
    from torch's sync debug mode, allocations from the caching allocator."""
    call()
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()
    previous = torch.cuda.get_sync_debug_mode()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                call()
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        torch.cuda.synchronize()
    after = torch.cuda.memory_stats()
    kernels = collections.Counter(
        e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
        and not e.name.startswith(("Memcpy", "Memset")))
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    allocations = after["allocation.all.allocated"] - before["allocation.all.allocated"]
    return CallCost(kernels=kernels, aten=collections.Counter(), host_syncs=syncs,
                    allocations=allocations, allocation_bytes=[])
