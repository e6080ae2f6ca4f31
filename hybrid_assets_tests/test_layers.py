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
