"""Committed files name no machine: docs, results, reports and tests use repository-relative paths."""

from __future__ import annotations

import re
import subprocess

from hybrid_assets.settings import PROJECT_ROOT

MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home|Users|tmp/pytest-of-\w+)/[\w.-]+")
TEXT_SUFFIXES = {".py", ".md", ".json", ".jsonl", ".toml", ".yaml", ".yml", ".txt", ".sh", ".cfg", ".example", ""}


def committed_text_files():
    listed = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        path = PROJECT_ROOT / name
        if path.suffix in TEXT_SUFFIXES and path.is_file() and path.stat().st_size < 5_000_000:
            yield path


def test_no_absolute_machine_path_in_committed_files():
    hits = []
    for path in committed_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line) and "MACHINE_PATH" not in line:
                hits.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()[:120]}")
    assert hits == []


def test_the_pattern_finds_a_machine_path():
    root, home = "/" + "work", "/" + "root"  # built, so this file names no machine path itself
    assert MACHINE_PATH.search(f"Reproduce: `cd {root}/main && make`")
    assert MACHINE_PATH.search(f'"adapter": "{home}/.cache/x"')
    assert not MACHINE_PATH.search("data/adapters/versions/x and ~/.cache/hybrid_assets and ../shared/benchmarks")
