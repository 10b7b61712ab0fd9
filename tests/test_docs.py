"""The manual: `docs/` builds with mkdocs in strict mode, the README's links lead somewhere,
and the pages that list the code (modules, benchmarks) name all of it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
DOCS = PROJECT / "docs"
PACKAGE = PROJECT / "daemon" / "facesieve"
# A Markdown link or image: [text](target) or ![alt](target), target without spaces.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# A tag that makes the browser fetch something (not a plain <a href>).
FETCH = re.compile(r"<(?:script|img|link|iframe|source)\b[^>]*\b(?:src|href)=\"(https?:)?//", re.I)


def _relative_links(markdown: str) -> list[str]:
    """Link targets that name a file of the project (no URL, no bare #anchor)."""
    targets = []
    for target in LINK.findall(markdown):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_mkdocs_builds_strict_without_a_warning(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: it is in the dev extra (pip install -e '.[dev]')")
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    assert "WARNING" not in output, output
    pages = sorted(path.stem for path in DOCS.glob("*.md"))
    assert pages, "no page in docs/"
    for page in pages:
        html = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert html.is_file(), f"docs/{page}.md was not built"
    fetching = {
        str(html.relative_to(site))
        for html in site.rglob("*.html")
        if FETCH.search(html.read_text(encoding="utf-8"))
    }
    assert fetching == set(), "built pages load something from the network"


def test_every_relative_link_in_the_readme_is_a_file() -> None:
    targets = _relative_links((PROJECT / "README.md").read_text(encoding="utf-8"))
    assert targets, "the README links to no page of the manual"
    missing = [target for target in targets if not (PROJECT / target).is_file()]
    assert missing == []


def test_the_readme_links_to_every_page_of_the_manual() -> None:
    linked = {
        (PROJECT / target).resolve()
        for target in _relative_links((PROJECT / "README.md").read_text(encoding="utf-8"))
    }
    unlinked = [page.name for page in sorted(DOCS.glob("*.md")) if page.resolve() not in linked]
    assert unlinked == []


def test_ci_runs_the_readmes_test_command() -> None:
    """The README tells developers to run `scripts/test`; CI must run that same command."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    assert "```sh\nscripts/test\n```" in readme
    ci_run = (PROJECT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^[^#\n]*\bexec scripts/test\b", ci_run, re.M), "CI does not run scripts/test"


def test_the_architecture_page_names_every_module() -> None:
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    unnamed = []
    for source in sorted(PACKAGE.rglob("*.py")):
        relative = source.relative_to(PACKAGE)
        if relative.name == "__init__.py" and len(relative.parts) > 1:
            # A subpackage is named by its folder, e.g. **`intake/`**.
            name = f"`{relative.parent.as_posix()}/`"
        else:
            name = f"`{relative.as_posix()}`"
        if name not in page:
            unnamed.append(name)
    assert unnamed == [], "add a line for each to docs/architecture.md"


def test_every_benchmark_is_listed_with_its_command() -> None:
    page = (DOCS / "development.md").read_text(encoding="utf-8")
    unlisted = [
        bench.name
        for bench in sorted((PROJECT / "bench").glob("*.py"))
        if f"python bench/{bench.name}`" not in page
    ]
    assert unlisted == [], "add a row for each to the Benchmarks table of docs/development.md"
