"""The emulated CUDA device (tests/simt): its build, its rules, and that every entry of
the CUDA kernel table and every launch variant actually runs on it. The kernels' results
are held against the CPU and the reference in tests/test_devices.py."""

import os
import subprocess
import sys

import operators
import pytest
import torch
from devices import EMULATED
from helpers import loss_and_grad, random_problem

import aploss_cuda
import simt
from simt import build

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def device():
    return simt.emulated_device()


# ---- the build ---------------------------------------------------------------------------------


def test_every_cuda_source_is_compiled():
    cuda_dir = os.path.join(build.CSRC, "cuda")
    cu_files = sorted(f for f in os.listdir(cuda_dir) if f.endswith(".cu"))
    assert [os.path.basename(p) for p in build.kernel_sources()] == cu_files
    assert "sorted_pass1_cuda.cu" in cu_files and "cuda_kernel_table.cu" in cu_files


def test_the_build_is_keyed_by_the_sources(monkeypatch, tmp_path):
    before = build.fingerprint()
    assert build.fingerprint() == before
    kernel = tmp_path / "extra_cuda.cu"
    kernel.write_text("// a kernel\n")
    sources = build.kernel_sources()
    monkeypatch.setattr(build, "kernel_sources", lambda: sources + [str(kernel)])
    with_kernel = build.fingerprint()
    assert with_kernel != before
    kernel.write_text("// the kernel, edited\n")
    assert build.fingerprint() not in (before, with_kernel)


def test_a_foreign_kernel_table_is_refused():
    with pytest.raises(TypeError, match="kernel table capsule"):
        aploss_cuda._C._set_emulated_device(object())
    import ctypes

    capsule_new = ctypes.pythonapi.PyCapsule_New
    capsule_new.restype = ctypes.py_object
    capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    foreign = capsule_new(ctypes.c_void_p(16), b"aploss.Kernels.0xdeadbeef0000", None)
    with pytest.raises(TypeError, match="built from the same"):
        aploss_cuda._C._set_emulated_device(foreign)


def test_inactive_device_leaves_cpu_tensors_on_the_cpu_kernels(device):
    scores, labels = random_problem((500,), seed=3)
    with device.active():
        loss_and_grad(scores, labels)
    assert device.launches(), "the emulated device ran nothing while active"
    loss_and_grad(scores, labels)
    assert device.launches() == [], "CPU tensors reached the emulated device after it was released"


# ---- the rules it enforces -----------------------------------------------------------------------

MISUSE = {
    "exit_before_collective": r"lane 0\) waits at __shfl_down_sync .*mask 0xffffffff\), but thread \(16,0,0\) \(lane 16\) has exited",
    "divergent_barrier": r"waits at __syncthreads \(.*selftest_kernels.cpp:\d+\), but thread \(1,0,0\) waits at __syncthreads \(.*selftest_kernels.cpp:\d+\)",
    "barrier_after_exit": r"waits at __syncthreads .*but thread \(32,0,0\) has exited",
    "mask_without_self": r"mask 0x1\): its mask does not include its own lane",
    "partial_warp": r"lane 8 of its mask does not exist \(40 threads per block\)",
    "different_collectives": r"waits at __ballot_sync .*but thread \(16,0,0\) \(lane 16\) waits at __any_sync",
    "shared_overflow": r"wrote past the end of one of: .*the shared array declared at .*selftest_kernels.cpp:\d+ \(256 bytes\)",
    "dynamic_overflow": r"wrote past the end of one of: the dynamic shared memory \(256 bytes",
    "too_many_threads": r"GPU would refuse this launch: block \(1025,1,1\) has more than 1024 threads",
    "grid_y_too_large": r"GPU would refuse this launch: grid \(1,65536,1\) exceeds",
    "smem_without_opt_in": r"49160 bytes of dynamic shared memory exceed the 49152 this kernel may use without cudaFuncSetAttribute",
}


# Under AddressSanitizer (tests/simt/README.md) an overflow stops the process at the
# faulting access instead, which is that mode's point.
OVERFLOWS = {"shared_overflow", "dynamic_overflow"}


@pytest.mark.parametrize("name", sorted(MISUSE))
@pytest.mark.parametrize("threads", ["forward", "reverse", "random"])
def test_misuse_is_reported_with_kernel_block_thread_and_sites(device, name, threads):
    if name in OVERFLOWS and build.asan_requested():
        pytest.skip("AddressSanitizer stops the process at the overflow")
    with pytest.raises(RuntimeError, match=MISUSE[name]) as error:
        device.run_selftest(name, threads=threads, seed=7)
    assert "kernel '" in str(error.value) and "launched at" in str(error.value)


@pytest.mark.parametrize("threads", ["forward", "reverse", "random"])
@pytest.mark.parametrize("profile", ["h100", "small"])
def test_collectives_compute_what_the_hardware_computes(device, threads, profile):
    assert device.run_selftest("collectives", profile=profile, threads=threads, seed=3) == [1.0]


def test_shared_memory_starts_as_garbage(device):
    # Slots nobody wrote read as NaN: a missing write or barrier shows in the results.
    values = device.run_selftest("unwritten_shared")
    assert len(values) == 32 and all(v != v for v in values)


@pytest.mark.parametrize("profile, limit", [("h100", 227 * 1024), ("small", 8 * 1024)])
def test_opt_in_shared_memory_up_to_the_device_limit(device, profile, limit):
    assert device.run_selftest("smem_with_opt_in", profile=profile) == [float(limit)]


def run_order(device, threads, blocks, seed=0):
    """(the first block's threads before its barrier, after it, the blocks' order): the
    kernel notes each thread's id in the order threads run, blocks one after another."""
    ids = [int(v) for v in device.run_selftest("order", threads=threads, blocks=blocks, seed=seed)]
    return ids[:64], ids[64:128], [ids[128 * k] // 64 for k in range(4)]


def test_thread_and_block_orders(device):
    before, after, blocks = run_order(device, "forward", "forward")
    assert before == after == list(range(64)) and blocks == [0, 1, 2, 3]
    before, after, _ = run_order(device, "reverse", "forward")
    assert before == after == list(range(63, -1, -1))
    _, _, blocks = run_order(device, "forward", "reverse")
    assert blocks == [3, 2, 1, 0]
    before, after, blocks = run_order(device, "random", "random", seed=1)
    assert sorted(before) == sorted(after) == list(range(blocks[0] * 64, blocks[0] * 64 + 64))
    assert before != after  # a new order after every barrier
    assert sorted(blocks) == [0, 1, 2, 3]
    assert run_order(device, "random", "random", seed=1) == (before, after, blocks)  # seeded
    assert run_order(device, "random", "random", seed=2) != (before, after, blocks)


@pytest.mark.skipif(build.asan_requested(), reason="AddressSanitizer reports the overflow itself")
def test_a_stack_overflow_hits_the_guard_page():
    code = (
        f"import sys; sys.path.insert(0, {HERE!r}); import simt; "
        "simt.emulated_device().run_selftest('stack_overflow')"
    )
    proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=HERE)
    assert proc.returncode != 0
    assert "simt: stack overflow in an emulated CUDA thread" in proc.stderr


# ---- every kernel and every launch variant runs on it ---------------------------------------------


def kernels_run(launches):
    """(file, kernel variable) of each launch: the variable names the variant."""
    return {(os.path.basename(r["site"].rsplit(":", 1)[0]), r["name"]) for r in launches}


ALL_LAUNCHES = {
    # one ungrouped ranking by the sorted method (csrc/cuda/ranking_cuda.cuh)
    ("ranking_gather_cuda.cu", "init_meta_kernel"),
    ("ranking_gather_cuda.cu", "gather"),
    ("rank_positives_cuda.cu", "rank_positives"),
    ("sorted_pass1_cuda.cu", "pass1"),
    ("positive_stage_cuda.cu", "ap_stage"),
    ("positive_stage_cuda.cu", "rank_sort_stage"),
    ("positive_stage_cuda.cu", "alrp_stage"),
    ("sorted_pass2_cuda.cu", "shared_pass2"),
    ("sorted_pass2_cuda.cu", "global_pass2"),
    # the pairwise method and grouped rankings
    ("gather_cuda.cu", "init_meta_kernel"),
    ("gather_cuda.cu", "kernel"),
    ("pairwise_cuda.cu", "kernel"),
    ("grouped_index_cuda.cu", "bases"),
    ("grouped_index_cuda.cu", "merge"),
    ("grouped_index_cuda.cu", "fill"),
    ("grouped_cuda.cu", "pass1"),
    ("grouped_cuda.cu", "gather"),
    ("grouped_cuda.cu", "pass2"),
    # the stage path of one ranking (process_group's pass 1), and its deterministic form
    ("interval_index_cuda.cu", "find_thresholds"),
    ("interval_index_cuda.cu", "bucket_thresholds"),
    ("interval_index_cuda.cu", "fill_records"),
    ("old_sorted_pass1_cuda.cu", "shared_kernel"),
    ("records_cuda.cu", "kernel"),
}


def every_entry_workload(device, profile):
    """A forward and backward through every kernel-table entry: single rankings (sorted
    and pairwise, the three losses) with P on both sides of the profile's shared-memory
    limits and of its one-block sort, grouped rankings, and the stage path's pass 1 of one
    ranking, plain and deterministic."""
    sizes = {"h100": [100, 9700], "small": [100, 400, 600]}[profile]
    for num_pos in sizes:
        n = 4 * num_pos + 1000
        g = torch.Generator().manual_seed(num_pos)
        labels = torch.zeros(n, dtype=torch.int64)
        labels[torch.randperm(n, generator=g)[:num_pos]] = 1
        scores = torch.randn(n, generator=g)
        loss_and_grad(scores, labels)
        if num_pos <= 600:
            loss_and_grad(scores, labels, method="pairwise")
            x = scores.clone().requires_grad_(True)
            targets = torch.where(labels == 1, torch.rand(n, generator=g), labels.float())
            aploss_cuda.rank_sort_loss(x, targets).backward()
            aploss_cuda.alrp_loss(x, labels, torch.rand(num_pos, generator=g))[0].backward()
    scores, labels = random_problem((4, 300, 5), seed=2, p_pos=0.02)
    loss_and_grad(scores, labels, group_ids=torch.arange(4)[:, None, None])
    # The stage path's pass 1 of one ranking (process_group's), whose float atomics the
    # deterministic mode replaces by per-entry records.
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    positives, offsets, positive_group, *_ = operators.rank_positives(
        operators.gather(scores, labels, None), 1, 1.0)
    operators.pass1(scores, labels, None, positives, offsets, positive_group, 1.0)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        operators.pass1(scores, labels, None, positives, offsets, positive_group, 1.0)
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("target", EMULATED, ids=str)
def test_every_kernel_table_entry_and_variant_runs(device, target):
    with target.running() as active:
        every_entry_workload(active, target.profile)
        launches = active.launches()
    assert not any(r["failed"] for r in launches)
    assert kernels_run(launches) == ALL_LAUNCHES
    # Several blocks, and on the small profile several grid-stride rounds per thread.
    assert max(r["grid"][0] for r in launches) > 1
    assert all(r["block"][0] in (1, 32, 256, 1024) for r in launches)
    if target.profile == "small":
        n_max = 4 * 400 + 1000
        assert any(r["grid"][0] * r["block"][0] < n_max for r in launches if r["name"] == "shared_pass2")


def test_the_pairwise_grid_uses_both_dimensions(device):
    with device.active(profile="small"):
        scores, labels = random_problem((5000,), seed=1, p_pos=0.1)
        loss_and_grad(scores, labels, method="pairwise")
        grids = [r["grid"] for r in device.launches() if "pairwise" in r["site"]]
    assert any(g[0] > 1 and g[1] > 1 for g in grids), grids


def test_launch_failures_are_runtime_errors_naming_the_kernel(device):
    # The driver's error path on the emulated device: a ValueError from the gather, after
    # the kernels ran; and a launch the GPU would refuse surfaces as a RuntimeError.
    with device.active():
        with pytest.raises(ValueError, match="labels must be"):
            aploss_cuda.ap_loss(torch.randn(10), torch.full((10,), 2))
    with pytest.raises(RuntimeError, match="noop_kernel"):
        device.run_selftest("too_many_threads")
