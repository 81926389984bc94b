"""Loads the compiled extension aploss_cuda._C, after checking that it was built against
the torch being imported: an extension built against another torch fails on load with an
undefined symbol, or crashes later; this names both versions and the fix instead.

setup.py records the torch it compiled against in aploss_cuda/_build_info.py, which is
read here before _C is loaded.
"""

import importlib
import os
import sys

import torch

RECORD = f"{__package__}._build_info"


def public_version(version: str) -> str:
    """'2.14.1+cu130' -> '2.14.1': the release, without the local build tag."""
    return str(version).split("+", 1)[0]


def rebuild_command(source_dir=None) -> str:
    """The command that rebuilds aploss_cuda against the torch of this interpreter."""
    if not (source_dir and os.path.isfile(os.path.join(source_dir, "setup.py"))):
        source_dir = "<path to the aploss_cuda sources>"
    python = sys.executable or "python"
    return f"{python} -m pip install --no-build-isolation --no-deps --force-reinstall {source_dir}"


def mismatch(record, torch_version: str, torch_cuda) -> str:
    """Why this build cannot run with this torch, or "" if it can.

    The release must be the same: torch keeps no C++ ABI between releases, patch
    releases and nightlies included. A different local tag (+cpu, +cu130) is the same
    C++ code for the CPU kernels, so it matters only when CUDA kernels were compiled:
    they link against torch's CUDA libraries, which must be of the CUDA they were built for.
    """
    built = record.TORCH_VERSION
    if public_version(built) != public_version(torch_version):
        reason = ""
    elif record.CUDA_KERNELS and record.TORCH_CUDA != torch_cuda:
        reason = (f" (its CUDA kernels were built for CUDA {record.TORCH_CUDA}; this torch "
                  f"has {f'CUDA {torch_cuda}' if torch_cuda else 'no CUDA'})")
    else:
        return ""
    return (
        f"aploss_cuda was built against torch {built} but is being imported with torch "
        f"{torch_version}{reason}. A torch extension runs only with the torch it was "
        f"compiled against; rebuild it against the torch you have:\n"
        f"    {rebuild_command(record.SOURCE_DIR)}"
    )


def not_built_message() -> str:
    package_dir = os.path.dirname(os.path.abspath(__file__))
    source_dir = os.path.dirname(package_dir)
    hint = ""
    if os.path.isfile(os.path.join(source_dir, "setup.py")):
        hint = (" This is the source tree: if aploss_cuda is installed, Python is importing "
                "this folder instead; run it from another folder (or with -P).")
    return (
        f"aploss_cuda's compiled extension is not built here ({package_dir} has no "
        f"_build_info.py, which the build writes beside _C).{hint} To build and install "
        f"it against the torch you have:\n"
        f"    {rebuild_command(source_dir)}"
    )


def load():
    """Imports aploss_cuda._C (which registers the aploss operators) or raises ImportError
    saying why it cannot run here and what to run."""
    try:
        record = importlib.import_module(RECORD)
    except ModuleNotFoundError as e:
        if e.name != RECORD:
            raise
        raise ImportError(not_built_message()) from None
    problem = mismatch(record, torch.__version__, torch.version.cuda)
    if problem:
        raise ImportError(problem)
    try:
        return importlib.import_module(f"{__package__}._C")
    except (ImportError, OSError) as e:
        raise ImportError(
            f"aploss_cuda's compiled extension failed to load ({e}). It was built against "
            f"torch {record.TORCH_VERSION} and this is torch {torch.__version__}; if torch "
            f"was reinstalled since, or the build is stale, rebuild it:\n"
            f"    {rebuild_command(record.SOURCE_DIR)}"
        ) from e


_C = load()
