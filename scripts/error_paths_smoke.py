"""Raises each C++-side input error of ap_loss once, each in its own process, and reports
which ones crash the interpreter instead of raising. scripts/gpu_check.sh runs it right
after the build: a crash here would otherwise take pytest workers down one by one.

    python -P scripts/error_paths_smoke.py      # exit 0: every case raised its error
"""

import subprocess
import sys

SETUP = "import torch, aploss_cuda\n"
CASES = {
    # name: (device, the call, the exception it must raise)
    "invalid label": ("cpu", "aploss_cuda.ap_loss(torch.randn(3, device=D), torch.tensor([0, 2, 1], device=D))", "ValueError"),
    "non-finite positive": ("cpu", "aploss_cuda.ap_loss(torch.tensor([0.0, float('nan')], device=D), torch.tensor([0, 1], device=D))", "ValueError"),
    "negative group id (operator)": ("cpu", "torch.ops.aploss.loss_forward('ap_loss', torch.randn(5, device=D), torch.ones(5, dtype=torch.long, device=D), None, torch.tensor([0, -2, 1, 1, 1], device=D), 1.0, True, 'sorted')", "ValueError"),
    "unknown method (operator)": ("cpu", "torch.ops.aploss.loss_forward('ap_loss', torch.randn(4, device=D), torch.ones(4, dtype=torch.long, device=D), None, None, 1.0, True, 'bogus')", "ValueError"),
}


def cases():
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:
        pass
    for name, (_, call, error) in CASES.items():
        for device in devices:
            yield f"{name} [{device}]", device, call, error


def main():
    failed = 0
    for label, device, call, error in cases():
        code = (
            SETUP + f"D = {device!r}\n"
            f"try:\n    {call}\nexcept {error} as e:\n    print('raised', type(e).__name__)\n"
            f"else:\n    raise SystemExit('no error raised')\n"
        )
        proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            print(f"ok       {label}: {proc.stdout.strip()}")
            continue
        failed += 1
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        print(f"FAILED   {label}: {how}; {(proc.stderr.strip().splitlines() or [''])[-1][:200]}")
    print(f"{failed} of the error paths failed" if failed else "every error path raised its error")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
