"""Ledger rules live in `ledger/`: one reader over the plain ledger and its shards, the
helpers every command shares, and locks that never follow a planted link."""

from __future__ import annotations

import ast
import subprocess
import sys

from .conftest import PROJECT

PACKAGE = PROJECT / "daemon" / "facesieve"
LEDGER_HELPERS = {"Fate", "fate", "open_ledger", "restorable", "purgeable"}


def test_the_daemon_loads_no_command_module_for_ledger_helpers() -> None:
    script = (
        "import sys, facesieve.daemon.guard, facesieve.daemon.worker; "
        "print(sorted(m for m in sys.modules if m.startswith('facesieve.people.restore')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]"


def test_ledger_helpers_are_imported_from_ledger_not_from_the_restore_command() -> None:
    wrong = []
    for module in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("restore"):
                names = {alias.name for alias in node.names} & LEDGER_HELPERS
                if names:
                    wrong.append(f"{module.relative_to(PACKAGE)}: {sorted(names)}")
    assert wrong == []
