"""The test suite itself: each test name is defined in one module only (a property has one
body), and every source file the tests name exists."""

import ast
import collections
import glob
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def suite_files():
    return sorted(glob.glob(os.path.join(HERE, "**", "*.py"), recursive=True))


def test_names_are_defined_in_one_module():
    where = collections.defaultdict(list)
    for path in suite_files():
        if not os.path.basename(path).startswith("test_"):
            continue
        for node in ast.parse(open(path).read()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                where[node.name].append(os.path.relpath(path, HERE))
    twice = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not twice, twice


def test_named_source_files_exist():
    # "csrc/cuda/sorted_pass*_cuda.cu" names a family of files: a glob.
    pattern = re.compile(r"\b(?:csrc|aploss_cuda|scripts|docs|benchmarks)/[\w./*-]*\w")
    missing = []
    for path in suite_files():
        for line_number, line in enumerate(open(path), 1):
            for name in pattern.findall(line):
                if not glob.glob(os.path.join(ROOT, name)):
                    missing.append(f"{os.path.relpath(path, ROOT)}:{line_number}: {name}")
    assert not missing, "\n".join(missing)
