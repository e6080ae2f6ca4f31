"""The architecture is enforced, not described: the import-linter contracts in pyproject.toml (layers
and no cycles) hold, and no module imports another module's private name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from hybrid_assets.settings import PROJECT_ROOT

PACKAGES = [PROJECT_ROOT / "hybrid_assets", PROJECT_ROOT / "benchmarks"]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 kept, 0 broken" in run.stdout


def private_imports(path: Path, root: Path = PROJECT_ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hybrid_assets"):
            found += [f"{path.relative_to(root)}:{node.lineno}: {node.module}.{alias.name}"
                      for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


def test_no_private_name_is_imported_from_another_module():
    offenders = [hit for root in PACKAGES for path in sorted(root.rglob("*.py")) for hit in private_imports(path)]
    assert offenders == []


def test_the_private_import_check_can_fail(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from hybrid_assets.knowledge.chunking import _secret\n")
    assert private_imports(probe, tmp_path) == ["probe.py:1: hybrid_assets.knowledge.chunking._secret"]


def function_level_project_imports(path: Path, root: Path = PROJECT_ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("hybrid_assets"):
                    found.append(f"{path.relative_to(root)}:{inner.lineno}: {inner.module}")
    return found


def test_project_imports_are_at_the_top_of_each_module():
    """Only third-party heavy libraries (torch, transformers, unstructured, weaviate, ...) are imported
    inside functions; our own modules are cheap to import, so they are imported at the top."""
    offenders = [hit for path in sorted((PROJECT_ROOT / "hybrid_assets").rglob("*.py"))
                 for hit in function_level_project_imports(path)]
    assert offenders == []


def test_importing_every_module_loads_no_heavy_library():
    """What makes top-level imports safe: no module of ours imports a heavy library at import time."""
    code = (
        "import importlib, pkgutil, sys, hybrid_assets\n"
        "for m in pkgutil.walk_packages(hybrid_assets.__path__, 'hybrid_assets.'): importlib.import_module(m.name)\n"
        "heavy = ('torch', 'transformers', 'peft', 'unstructured', 'weaviate', 'sentence_transformers', 'xgrammar',\n"
        "         'bitsandbytes', 'trl', 'datasets')\n"
        "print(','.join(h for h in heavy if h in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=PROJECT_ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == ""
