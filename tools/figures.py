"""The figures the manual quotes, each with the command that measured it (issue 21).

    python tools/figures.py            every figure block: page, section, command, commit, load
    python tools/figures.py --check    exit 1 when the manual and docs/figures.toml disagree
    python tools/figures.py --stale    the figures whose code changed after they were measured

The registry is docs/figures.toml (its header says what each field means). `--check`
fails when a section of docs/*.md or README.md quotes measurement-like numbers (ms, s,
%, MB, GB, images/s, x, counts like 48/49) and has no entry; when an entry's section is
not on its page or does not name the entry's command; when a command names a bench,
tool or facesieve command (or a bench's option) that does not exist; and when a figure
measured before a change that affects it does not say so ("measured at <commit>") in its
section. `--stale` needs git: it diffs the code an entry names between the commit it was
measured at and HEAD (renames followed, so a moved module with the same text is not a
change) and prints what changed since.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
REGISTRY = PROJECT / "docs" / "figures.toml"
# A number with a unit of measure, or a count such as 48/49 (not a date or a fraction
# of a path: no word character or slash right after it).
FIGURE = re.compile(
    r"(?<![\w.#/-])\d[\d,]*(?:\.\d+)?\s?(?:ms|s|%|MB|MiB|GB|images/s|x)(?![\w/])"
    r"|(?<![\w./])\d[\d,]*/\d[\d,]*(?![\w/])"
)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
SCRIPT = re.compile(r"\b((?:bench|tools)/[\w.-]+\.(?:py|sh))\b")
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass
class Figure:
    id: str
    doc: str
    section: str
    command: str
    measured_at: str
    date: str
    load: str
    code: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Change:
    commit: str
    what: str
    affects: list[str]


@dataclass
class Registry:
    figures: list[Figure]
    changes: list[Change]
    exempt: dict[tuple[str, str], str]  # (doc, section) -> why its numbers are no figures


def load_registry(path: Path = REGISTRY) -> Registry:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return Registry(
        [Figure(**entry) for entry in data.get("figure", [])],
        [Change(**entry) for entry in data.get("change", [])],
        {(e["doc"], e["section"]): e["why"] for e in data.get("not_a_figure", [])},
    )


def sections(page: Path) -> dict[str, str]:
    """Heading text -> the prose of its section (up to the next heading), code blocks
    left out. Text before the first heading is under ""."""
    found: dict[str, list[str]] = {"": []}
    current, fenced = "", False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = HEADING.match(line)
        if heading:
            current = heading.group(2)
            found.setdefault(current, [])
            continue
        found[current].append(line)
    return {title: "\n".join(lines) for title, lines in found.items()}


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def facesieve_commands() -> set[str]:
    sys.path.insert(0, str(PROJECT / "daemon"))
    from facesieve.cli.main import build_parser

    parser = build_parser([])
    for action in parser._actions:  # argparse offers no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def command_problems(figure: Figure, commands: set[str], root: Path) -> list[str]:
    """What is wrong with the command an entry names: a missing script, option or
    facesieve command."""
    if figure.command == "none":
        return [] if figure.note else [f"{figure.id}: command none needs a note saying why"]
    scripts = SCRIPT.findall(figure.command)
    words = figure.command.split()
    if "facesieve" in words:
        sub = words[words.index("facesieve") + 1] if words[-1] != "facesieve" else ""
        if sub not in commands:
            return [f"{figure.id}: `facesieve {sub}` is no facesieve command"]
        return []
    if not scripts:
        return [f"{figure.id}: command {figure.command!r} names no bench/ or tools/ script"]
    problems = []
    for script in scripts:
        source = root / script
        if not source.is_file():
            problems.append(f"{figure.id}: {script} does not exist")
            continue
        text = source.read_text(encoding="utf-8")
        for option in re.findall(r"(?<!\S)(--[\w-]+)", figure.command):
            if f'"{option}"' not in text:
                problems.append(f"{figure.id}: {script} has no option {option}")
    return problems


def named_in(figure: Figure, text: str) -> bool:
    """Does the section name the command beside its figures?"""
    if figure.command == "none":
        return "no `bench/`" in text or "no bench" in text
    words = figure.command.split()
    if "facesieve" in words:
        index = words.index("facesieve")
        return " ".join(words[index : index + 2]) in text
    return all(script in text for script in SCRIPT.findall(figure.command))


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout


def is_before(root: Path, measured: str, change: str) -> bool:
    """Was `measured` taken on code that does not contain `change`?"""
    result = subprocess.run(
        ["git", "merge-base", "--is-ancestor", change, measured], cwd=root, capture_output=True
    )
    if result.returncode not in (0, 1):
        raise RuntimeError(result.stderr.decode(errors="replace").strip())
    return result.returncode == 1


def have_history(root: Path) -> bool:
    """Is the full git history here? Without it (a tarball, a shallow clone) the rule on
    changes is not checked, rather than checked wrongly."""
    try:
        shallow = git(root, "rev-parse", "--is-shallow-repository").strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return shallow == "false"


def check(registry: Registry, root: Path = PROJECT) -> list[str]:
    problems: list[str] = []
    commands = facesieve_commands()
    known = {figure.id for figure in registry.figures}
    by_section: dict[tuple[str, str], list[Figure]] = {}
    for figure in registry.figures:
        by_section.setdefault((figure.doc, figure.section), []).append(figure)
        if not COMMIT.match(figure.measured_at):
            problems.append(f"{figure.id}: measured_at {figure.measured_at!r} is no commit")
        problems += command_problems(figure, commands, root)
    if len(known) != len(registry.figures):
        problems.append("two [[figure]] entries share an id")
    for change in registry.changes:
        problems += [
            f"[[change]] {change.commit} affects unknown id {i}"
            for i in change.affects
            if i not in known
        ]
    texts: dict[tuple[str, str], str] = {}
    for page in pages(root):
        doc = page.relative_to(root).as_posix()
        for title, text in sections(page).items():
            texts[(doc, title)] = " ".join(text.split())  # a phrase may wrap
            if FIGURE.search(text) and (doc, title) not in by_section | registry.exempt:
                shown = ", ".join(sorted(set(FIGURE.findall(text)))[:5])
                problems.append(
                    f"{doc} \u00a7 {title!r} quotes figures ({shown}) with no entry in "
                    "docs/figures.toml"
                )
    for key in by_section.keys() | registry.exempt.keys():
        if key not in texts:
            problems.append(f"{key[0]} has no section {key[1]!r} (named in docs/figures.toml)")
    for key, figures in by_section.items():
        text = texts.get(key)
        if text is None:
            continue
        for figure in figures:
            if not named_in(figure, f"{key[1]}\n{text}"):  # the heading may name it
                problems.append(
                    f"{figure.id}: {key[0]} \u00a7 {key[1]!r} does not name {figure.command!r}"
                )
    if not have_history(root):
        print("no full git history: figures measured before a change are not checked")
    else:
        for figure in registry.figures:
            before = [
                c
                for c in registry.changes
                if figure.id in c.affects and is_before(root, figure.measured_at, c.commit)
            ]
            text = texts.get((figure.doc, figure.section), "")
            if before and f"measured at {figure.measured_at}" not in text.lower():
                problems.append(
                    f"{figure.id}: measured at {figure.measured_at}, before "
                    f"{'; '.join(c.what for c in before)}; its section must say so "
                    f'("measured at {figure.measured_at}, before ...; re-measure with ...")'
                )
    return problems


def changed_since(root: Path, commit: str, code: list[str]) -> dict[str, int]:
    """Files under `code` that differ between `commit` and HEAD, with lines changed;
    renames are followed, so a module moved unchanged does not count."""
    out = git(root, "diff", "-M", "--numstat", "-z", commit, "HEAD")
    fields, changed, index = out.split("\0"), {}, 0
    while index < len(fields) and fields[index]:
        added, deleted, path = fields[index].split("\t", 2)
        index += 1
        if not path:  # a rename: the old path, then the new one, follow
            path = fields[index + 1]
            index += 2
        lines = 0 if added == "-" else int(added) + int(deleted)
        if lines and any(path == c or path.startswith(c.rstrip("/") + "/") for c in code):
            changed[path] = lines
    return changed


def stale(registry: Registry, root: Path = PROJECT) -> list[str]:
    lines = []
    for figure in registry.figures:
        before = [
            c.what
            for c in registry.changes
            if figure.id in c.affects and is_before(root, figure.measured_at, c.commit)
        ]
        changed = changed_since(root, figure.measured_at, figure.code) if figure.code else {}
        if not (before or changed):
            continue
        line = (
            f"{figure.id} ({figure.doc} \u00a7 {figure.section}), measured at {figure.measured_at}"
        )
        if before:
            line += ": before " + "; ".join(before)
        if changed:
            last = git(
                root,
                "log",
                "-1",
                "--no-merges",
                "--format=%h %ad",
                "--date=short",
                f"{figure.measured_at}..HEAD",
                "--",
                *changed,
            ).strip()
            line += (
                f"; since then {sum(changed.values())} lines changed in {len(changed)} "
                f"files of its code (last: {last or 'a merge'})"
            )
        lines.append(line + f"; re-measure with `{figure.command}`")
    return lines


def listing(registry: Registry) -> list[str]:
    rows = [
        "| id | page \u00a7 section | command | measured at | date | load |",
        "|---|---|---|---|---|---|",
    ]
    for f in registry.figures:
        command = f"none ({f.note})" if f.command == "none" else f"`{f.command}`"
        rows.append(
            f"| {f.id} | {f.doc} \u00a7 {f.section} | {command} | {f.measured_at} "
            f"| {f.date} | {f.load} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 on a figure without entry")
    mode.add_argument("--stale", action="store_true", help="figures measured on older code")
    args = parser.parse_args(argv)
    registry = load_registry()
    if args.check:
        problems = check(registry)
        for problem in problems:
            print(problem)
        print(f"{len(registry.figures)} figure blocks, {len(problems)} problems")
        return 1 if problems else 0
    if args.stale:
        found = stale(registry)
        print("\n".join(found) if found else "no figure is stale")
        print(f"{len(found)} of {len(registry.figures)} figure blocks stale")
        return 0
    print("\n".join(listing(registry)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
