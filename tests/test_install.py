"""Installing like a user: the build needs the torch it will run with and says so, and an
extension built against another torch is refused on import with both versions and the fix.

The import tests run a fresh interpreter (an import can run once per process), in an empty
folder so that it imports the installed package, not the source tree."""

import ast
import os
import re
import subprocess
import sys
import textwrap
import types

import pytest
import torch

import aploss_cuda
from aploss_cuda import _extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = pytest.importorskip("tomli")


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def requirement_name(requirement):
    return re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group().lower()


def import_in_fresh_python(tmp_path, prelude):
    """Runs `prelude`, then `import aploss_cuda`; returns the ImportError's message and its
    cause's, or fails if the import succeeds."""
    script = textwrap.dedent(prelude) + textwrap.dedent("""
        try:
            import aploss_cuda
        except ImportError as e:
            print(str(e))
            print("CAUSE:", repr(e.__cause__))
        else:
            print("IMPORTED")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "IMPORTED" not in result.stdout
    return result.stdout


# ---- the build ---------------------------------------------------------------------------

def test_build_requires_no_torch():
    """An isolated build would compile against whatever torch the index serves."""
    names = {requirement_name(r) for r in pyproject()["build-system"]["requires"]}
    assert "setuptools" in names
    assert not names & {"torch", "numpy"}


def test_setup_without_torch_says_what_to_run(tmp_path):
    hidden = tmp_path / "torch"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError('torch is hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    result = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "torch is hidden by the test" in result.stderr
    assert "pip install --no-build-isolation" in result.stderr
    assert "Traceback" not in result.stderr


# ---- one version -------------------------------------------------------------------------

def test_version_is_defined_once():
    """pyproject.toml reads the version from aploss_cuda/__init__.py, where it is a literal
    (setuptools reads it from the source, without importing the package)."""
    project = pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "aploss_cuda.__version__"}
    with open(os.path.join(ROOT, "aploss_cuda", "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    (literal,) = [ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "__version__" for t in node.targets)]
    assert aploss_cuda.__version__ == literal
    assert aploss_cuda.info()["version"] == literal


def test_installed_metadata_has_the_version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        assert version("aploss_cuda") == aploss_cuda.__version__
    except PackageNotFoundError:
        pytest.skip("aploss_cuda is imported from a folder without its install metadata")


# ---- the torch it was built with ---------------------------------------------------------

def test_info_reports_the_torch_it_was_built_with():
    info = aploss_cuda.info()
    assert info["built_with_torch"] == torch.__version__
    expected_cuda = torch.version.cuda if info["cuda_kernels_compiled"] else None
    assert info["built_with_cuda"] == expected_cuda


def record(torch_version, torch_cuda=None, cuda_kernels=False):
    return types.SimpleNamespace(TORCH_VERSION=torch_version, TORCH_CUDA=torch_cuda,
                                 CUDA_KERNELS=cuda_kernels, SOURCE_DIR=ROOT)


@pytest.mark.parametrize("built, running, running_cuda, refused", [
    (record("2.14.1+cu130", "13.0", True), "2.14.1+cu130", "13.0", False),
    (record("2.14.1+cu130", "13.0", True), "2.14.0+cu130", "13.0", True),
    (record("2.14.1+cpu"), "2.15.0+cpu", None, True),
    (record("2.15.0.dev20260101+cpu"), "2.15.0.dev20260102+cpu", None, True),
    # The CPU kernels are the same C++ against either build of one torch release...
    (record("2.14.1+cu130", "13.0", False), "2.14.1+cpu", None, False),
    # ...the CUDA kernels need torch's CUDA libraries of the CUDA they were built for.
    (record("2.14.1+cu130", "13.0", True), "2.14.1+cpu", None, True),
    (record("2.14.1+cu128", "12.8", True), "2.14.1+cu130", "13.0", True),
])
def test_which_torch_builds_are_refused(built, running, running_cuda, refused):
    problem = _extension.mismatch(built, running, running_cuda)
    assert bool(problem) == refused
    if refused:
        assert built.TORCH_VERSION in problem and running in problem
        assert "--no-build-isolation" in problem and ROOT in problem


def test_import_refuses_an_extension_built_against_another_torch(tmp_path):
    message = import_in_fresh_python(tmp_path, """
        import sys, types
        sys.modules["aploss_cuda._build_info"] = types.SimpleNamespace(
            TORCH_VERSION="1.13.0+cu117", TORCH_CUDA="11.7", CUDA_KERNELS=True, SOURCE_DIR=None)
    """)
    assert "built against torch 1.13.0+cu117" in message
    assert f"imported with torch {torch.__version__}" in message
    assert "pip install --no-build-isolation --no-deps --force-reinstall" in message


def test_import_explains_an_extension_that_fails_to_load(tmp_path):
    """What a stale build gives today: an undefined symbol, raised by the loader."""
    message = import_in_fresh_python(tmp_path, """
        import sys

        class StaleBuild:  # a finder whose _C fails as a stale build's would
            def find_spec(self, name, path=None, target=None):
                if name == "aploss_cuda._C":
                    raise ImportError("_C.so: undefined symbol: _ZN3c1017SomethingRemovedEv")

        sys.meta_path.insert(0, StaleBuild())
    """)
    assert "failed to load" in message and f"torch {torch.__version__}" in message
    assert "pip install --no-build-isolation --no-deps --force-reinstall" in message
    assert "CAUSE: ImportError" in message and "undefined symbol" in message


def test_import_says_when_the_extension_is_not_built(tmp_path):
    message = import_in_fresh_python(tmp_path, """
        import sys
        sys.modules["aploss_cuda._build_info"] = None  # as if never written by a build
    """)
    assert "not built" in message
    assert "pip install --no-build-isolation" in message
