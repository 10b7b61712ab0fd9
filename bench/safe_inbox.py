"""Attack rounds against `scan` and `watch`: how many each survives (issue 9).

Usage (as root: the uploads belong to another uid):
    PYTHONPATH=daemon python bench/safe_inbox.py [--rounds 5]

Each round makes a fresh inbox, plants an uploader's file and strikes once at the
moment facesieve acts (tests/safe_attacks.py), with the quarantine on the inbox's
filesystem ("same fs") and on /dev/shm ("xfs"), then checks every rule: nothing
outside the inbox read, changed, created or deleted; no setuid/setgid file
written; every upload's final bytes in exactly one place; the ledger's sha256 the
content acted on. A round survives when no rule is broken. The stand-in model is
used: the attacks are about files, not faces.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "daemon"))

import structlog  # noqa: E402
from tests.safe_attacks import (  # noqa: E402
    GREEN,
    RED,
    Layout,
    at_the_link,
    before_acting,
    garbage_like,
    other_fs_available,
    run_scan,
    run_watch,
    swap_for_symlink,
)


def _rewrite_keeping_mtime(path: Path, data: bytes) -> None:
    info = path.stat()
    with path.open("r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


# name -> (upload relative path, bytes, mode, make the hook, reject action)
Attack = tuple[str, bytes, int, Callable[[Layout], AbstractContextManager[Any]], str]


def _folder_swap(layout: Layout) -> AbstractContextManager[Any]:
    def swap(*_: object) -> None:
        (layout.inbox / "sub").rename(layout.inbox / "sub-moved")
        (layout.inbox / "sub").symlink_to(layout.outside, target_is_directory=True)
        layout.uploads["sub-moved/x.bmp"] = layout.uploads.pop("sub/x.bmp")

    return before_acting(swap)


def _secret_link(at_link: bool) -> Callable[[Layout], AbstractContextManager[Any]]:
    def make(layout: Layout) -> AbstractContextManager[Any]:
        def swap(*_: object) -> None:
            swap_for_symlink(layout.inbox / "x.jpg", layout.outside / "secret")
            layout.uploads.pop("x.jpg")

        return at_the_link(swap) if at_link else before_acting(swap)

    return make


def _content_swap(at_link: bool) -> Callable[[Layout], AbstractContextManager[Any]]:
    def make(layout: Layout) -> AbstractContextManager[Any]:
        def swap(*_: object) -> None:
            _rewrite_keeping_mtime(layout.inbox / "x.bmp", GREEN)
            layout.replaced("x.bmp", GREEN)

        return at_the_link(swap) if at_link else before_acting(swap)

    return make


def _nothing(layout: Layout) -> AbstractContextManager[Any]:
    return before_acting(lambda path: None)


ATTACKS: dict[str, Attack] = {
    "1 folder->symlink, quarantine": ("sub/x.bmp", RED, 0o644, _folder_swap, "quarantine"),
    "1 folder->symlink, delete": ("sub/x.bmp", RED, 0o644, _folder_swap, "delete"),
    "2 file->symlink to secret": ("x.jpg", b"", 0o644, _secret_link(False), "quarantine"),
    "2 ... at the link": ("x.jpg", b"", 0o644, _secret_link(True), "quarantine"),
    "3 setuid upload": ("id.jpg", Path("/usr/bin/id").read_bytes(), 0o4755, _nothing, "quarantine"),
    "5 bytes swapped, mtime back, delete": ("x.bmp", RED, 0o644, _content_swap(False), "delete"),
    "5 ... quarantine": ("x.bmp", RED, 0o644, _content_swap(False), "quarantine"),
    "5 ... at the link": ("x.bmp", RED, 0o644, _content_swap(True), "quarantine"),
}


def one_round(mode: str, xfs: bool, attack: Attack, base: Path) -> tuple[bool, list[str]]:
    relative, data, file_mode, hook, reject = attack
    layout = Layout(base, xfs=xfs)
    # The uploader's file looks like its target: the victim's mtime and size, or the
    # size a symlink to the secret will show.
    like = layout.outside / "x.bmp" if relative == "sub/x.bmp" else None
    if relative == "x.jpg":
        data = garbage_like(layout.outside / "secret")
    try:
        if "/" in relative:
            folder = layout.inbox / relative.split("/")[0]
            folder.mkdir()
            os.chown(folder, 5002, 5002)
        config = layout.config(actions={"reject": reject})
        with hook(layout) as struck:
            if mode == "scan":
                layout.upload(relative, data, file_mode, like=like)
                code = run_scan(layout, config)
                if struck:
                    code = code or run_scan(layout, config)  # the next pass, as cron would
            else:
                started: list[float] = []

                def until() -> bool:
                    if struck and not started:
                        started.append(time.monotonic())
                    return bool(started) and time.monotonic() - started[0] > 1.0

                code = run_watch(
                    layout,
                    config,
                    lambda: layout.upload(relative, data, file_mode, like=like),
                    until=until,
                )
        problems = layout.check(deleted_ok=reject == "delete")
        if code != 0:
            problems.append(f"exit code {code}")
        if not struck:
            problems.append("the strike never happened")
        return not problems, problems
    finally:
        layout.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per attack and setting")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the uploads belong to uid 5002")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory(prefix="facesieve-attacks-") as temp:
        xfs_ok = other_fs_available(Path(temp))
        settings = [(m, x) for m in ("scan", "watch") for x in (False, True) if xfs_ok or not x]
        totals: dict[tuple[str, bool], list[int]] = {s: [0, 0] for s in settings}
        print(
            f"{'attack':<40}"
            + "".join(f"{m + (' xfs' if x else ' same fs'):>16}" for m, x in settings)
        )
        for name, attack in ATTACKS.items():
            cells = []
            for mode, xfs in settings:
                survived = 0
                for index in range(args.rounds):
                    base = Path(temp) / f"{mode}-{xfs}-{abs(hash(name))}-{index}"
                    # The runs log to stdout/stderr; the table is the output.
                    with (
                        contextlib.redirect_stdout(io.StringIO()),
                        contextlib.redirect_stderr(io.StringIO()),
                    ):
                        ok, problems = one_round(mode, xfs, attack, base)
                    survived += ok
                    if not ok:
                        print(f"  LOST {name} {mode} xfs={xfs}: {problems}", file=sys.stderr)
                totals[(mode, xfs)][0] += survived
                totals[(mode, xfs)][1] += args.rounds
                cells.append(f"{survived}/{args.rounds}")
            print(f"{name:<40}" + "".join(f"{c:>16}" for c in cells), flush=True)
        print(
            f"{'survived, all attacks':<40}"
            + "".join(f"{f'{s}/{t}':>16}" for s, t in totals.values())
        )


if __name__ == "__main__":
    main()
