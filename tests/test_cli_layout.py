"""The command line lives in `cli/`, one module per command; the rest of facesieve
knows nothing of argparse, and running one command imports only its own module."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import facesieve
from facesieve.cli.main import _COMMANDS, build_parser

PACKAGE = Path(facesieve.__file__).resolve().parent
CLI = PACKAGE / "cli"
# Shared by several commands, not commands themselves.
HELPERS = {"__init__", "main", "arguments", "output", "verdicts"}


def _imports_argparse(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(
            alias.name.split(".")[0] == "argparse" for alias in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "argparse":
            return True
    return False


def test_no_module_outside_cli_imports_argparse() -> None:
    offenders = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if CLI not in path.parents and _imports_argparse(path)
    )
    assert offenders == []


def test_every_command_is_a_module_of_cli_with_configure_and_run() -> None:
    modules = {path.stem for path in CLI.glob("*.py")} - HELPERS
    assert {command.module for command in _COMMANDS.values()} == modules
    for name, command in _COMMANDS.items():
        assert callable(command.configure()), name
        assert callable(command.run()), name


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_every_command_parses_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser([name, "--help"]).parse_args([name, "--help"])
    assert exited.value.code == 0
    assert f"usage: facesieve {name}" in capsys.readouterr().out


_LOADED = """
import json, sys
from facesieve.cli.main import build_parser
words = sys.argv[1:]
build_parser(words).parse_args(words)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("facesieve.cli."))))
"""


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["check", "x.jpg"], {"check", "arguments", "output"}),
        (["stats"], {"stats", "arguments"}),
        (["approve", "--id", "1"], {"approve", "verdicts", "arguments"}),
    ],
)
def test_parsing_a_command_imports_only_its_own_module(
    words: list[str], expected: set[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, *words], capture_output=True, text=True, check=True
    )
    loaded = {name.removeprefix("facesieve.cli.") for name in json.loads(result.stdout)}
    assert loaded == expected | {"main"}
