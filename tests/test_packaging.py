"""Every import is declared, and constraints.txt pins every declared package at a version
its floor in pyproject.toml admits: the lock and the declared dependencies cannot drift."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import distributions, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = PROJECT / "daemon" / "facesieve"
# Optional extras that the test environment does not install, so importlib cannot map them.
NOT_INSTALLED_HERE = {"systemd": "systemd-python"}


def _requirements() -> dict[str, list[Requirement]]:
    """`project.dependencies` and each optional extra, by group."""
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return {group: [Requirement(line) for line in lines] for group, lines in groups.items()}


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in (PROJECT / "constraints.txt").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and name and version, f"not a name==version pin: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _third_party_imports() -> set[str]:
    """Top-level modules that daemon/facesieve imports, less the standard library."""
    found: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"facesieve"}


def _providers() -> dict[str, set[str]]:
    """Top-level module -> distributions that install it, from top_level.txt and RECORD
    (dlib-bin's top_level.txt names only `_dlib_pybind11`, not the `dlib` it installs)."""
    providers = {module: set(names) for module, names in packages_distributions().items()}
    for dist in distributions():
        for file in dist.files or ():
            top = file.parts[0]
            if len(file.parts) > 1 and file.parts[1] == "__init__.py":
                providers.setdefault(top, set()).add(dist.metadata["Name"])
    return providers


def test_every_import_of_the_package_is_declared() -> None:
    declared = {canonicalize_name(req.name) for reqs in _requirements().values() for req in reqs}
    providers = _providers()
    undeclared = {}
    for module in sorted(_third_party_imports()):
        names = providers.get(module) or {NOT_INSTALLED_HERE.get(module, f"<unknown: {module}>")}
        if not {canonicalize_name(name) for name in names} & declared:
            undeclared[module] = names
    assert undeclared == {}, (
        f"imported, but no distribution of it is in pyproject.toml: {undeclared}"
    )


def test_constraints_pin_every_declared_package_within_its_range() -> None:
    pins = _pins()
    problems = []
    for group, requirements in _requirements().items():
        if group == "systemd":
            continue  # built only by deploy/install.sh; see the header of constraints.txt
        for req in requirements:
            pinned = pins.get(canonicalize_name(req.name))
            if pinned is None:
                problems.append(f"{req.name} ([{group}]) is not pinned")
            elif not req.specifier.contains(pinned, prereleases=True):
                problems.append(f"{req.name}=={pinned} is outside {req} ([{group}])")
    assert problems == []


def test_floors_are_the_tested_versions() -> None:
    """A floor below the pinned release would admit versions no test ran on."""
    pins = _pins()
    loose = []
    for req in _requirements()[""]:
        floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None or not floors:
            loose.append(f"{req} has no floor" if not floors else f"{req} is not pinned")
            continue
        if (max(floors).major, max(floors).minor) != (pinned.major, pinned.minor):
            loose.append(f"{req}: tested {pinned}")
    assert loose == []
