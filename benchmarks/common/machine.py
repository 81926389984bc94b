"""What a result was measured on: the device, the library build, and the CPU time other
processes took meanwhile (on a shared machine, the reason an absolute time is slow)."""

import datetime
import os
import platform
import re
import subprocess
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def device_slug(device):
    """'cpu-2cores', 'nvidia-h100-80gb-hbm3': the results' file-name prefix."""
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"cpu-{torch.get_num_threads()}cores"


def environment(device, aploss_cuda):
    """JSON-able facts about this run; info() keys are taken as the library has them."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    return dict(
        device=device_slug(device),
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else f"{platform.machine()}, {os.cpu_count()} cores"),
        date=datetime.date.today().isoformat(),
        torch=torch.__version__, python=platform.python_version(),
        threads=torch.get_num_threads(),
        aploss_cuda_file=os.path.dirname(aploss_cuda.__file__),
        aploss_cuda_info=aploss_cuda.info(),
        checkout=git("describe", "--always", "--dirty"),
    )


class OtherProcessesCpu:
    """Share of the machine's CPU time that other processes used (or the hypervisor stole)
    between start() and stop(): busy time from /proc/stat minus this process's own, over
    wall time x CPUs. None where /proc is not readable."""

    def _snapshot(self):
        try:
            with open("/proc/stat") as f:
                ticks = [int(x) for x in f.readline().split()[1:]]
            with open("/proc/self/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            return None
        busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        return busy, int(fields[11]) + int(fields[12]), time.perf_counter()  # own utime + stime

    def start(self):
        self.begin = self._snapshot()
        return self

    def stop(self):
        end = self._snapshot()
        if self.begin is None or end is None or end[2] <= self.begin[2]:
            return None
        other_ticks = (end[0] - self.begin[0]) - (end[1] - self.begin[1])
        seconds = other_ticks / os.sysconf("SC_CLK_TCK")
        return max(0.0, seconds / ((end[2] - self.begin[2]) * (os.cpu_count() or 1)))
