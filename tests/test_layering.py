"""Layering and dependencies: the import contracts hold, they cover every harness module, and every hard
dependency of pyproject.toml is imported by the code it is there for."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest

import harness

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CODE_DIRS = ("harness", "methods", "context_parallel", "workloads", "suites")
# distribution name -> the module its users import, where the two differ
IMPORT_NAME = {"pyyaml": "yaml", "megatron-core": "megatron.core", "fla-core": "fla"}
# what each hard dependency is for, and a module of ours that uses it for that
PURPOSE = {
    "torch": ("tensors, kernels, torch.distributed", "harness/interfaces/comm.py"),
    "ray": ("the cluster scheduler: tasks, rank actors, placement groups", "harness/cluster/rank_group.py"),
    "pyyaml": ("suite files, --param values, cluster profiles and rate tables", "suites/schema.py"),
    "pydantic": ("suite file schema validation", "suites/schema.py"),
    "rich": ("tables and progress bars", "harness/results/report.py"),
    "matplotlib": ("PNG plots and mask pictures", "harness/results/plot.py"),
    "numpy": ("document-length sampling of the mask patterns", "harness/masks/documents.py"),
    "deepspeed": ("the deepspeed_ulysses peer strategy", "context_parallel/peer_deepspeed_ulysses.py"),
    "megatron-core": ("Megatron's context-parallel rank groups", "harness/cluster/megatron_groups.py"),
    "yunchang": ("the yunchang peer strategies", "context_parallel/peer_yunchang.py"),
    "transformers": ("real model classes (Qwen3, MiniMax) in workloads", "workloads/models/qwen3.py"),
    "fla-core": ("flash-linear-attention references beside our linear and TTT methods", "methods/ttt_linear.py"),
    "triton": ("GPU timing (do_bench); fla-core's import", "harness/execution/measure.py"),
}


def _contracts() -> list[dict]:
    return PYPROJECT["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold() -> None:
    pytest.importorskip("importlinter")
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(_contracts())} kept, 0 broken" in proc.stdout


def test_every_harness_module_is_under_the_catalog_only_contract() -> None:
    """A new harness module is either listed in the 'only harness.catalog imports plugins' contract or is the one
    allowed to import the plugin packages: the catalog itself."""
    contract = next(c for c in _contracts() if c["id"] == "catalog-only")
    listed = set(contract["source_modules"])
    allowed = {"harness.catalog"}
    for module in pkgutil.iter_modules(harness.__path__, "harness."):
        assert module.name in listed | allowed, f"{module.name}: add it to the catalog-only contract's sources"


def test_the_three_plugin_packages_sit_side_by_side() -> None:
    """Methods, strategies and workloads are three top-level plugin packages, one file per entry; the model
    library the workloads share is a sub-package of theirs, not part of the harness."""
    for package in ("methods", "context_parallel", "workloads"):
        assert (ROOT / package / "__init__.py").is_file(), package
    assert not (ROOT / "harness" / "workloads").exists()
    assert (ROOT / "workloads" / "models" / "__init__.py").is_file()


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_every_dependency_is_imported() -> None:
    deps = [_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]]
    assert set(deps) == set(PURPOSE), "a hard dependency was added or dropped: say in PURPOSE what it is for"
    sources = {p.relative_to(ROOT).as_posix(): p.read_text() for d in CODE_DIRS for p in (ROOT / d).rglob("*.py")}
    for dist in deps:
        module = IMPORT_NAME.get(dist, dist.replace("-", "_"))
        pattern = re.compile(rf"^\s*(?:import|from)\s+{re.escape(module)}(?:[.\s]|$)", re.MULTILINE)
        users = sorted(path for path, text in sources.items() if pattern.search(text))
        assert users, f"{dist} is a hard dependency but no module imports {module}"
        what, where = PURPOSE[dist]
        assert where in users, f"{dist} is there for {what}, in {where}; importers: {users}"
