"""An uploader's attempt to blind `watch` (issue 18): folder-symlink churn.

Usage: python tests/flood_attack.py INBOX [--folders 120] [--rounds 4] [--seconds 60]

Makes `--folders` tiny folders in INBOX, each holding a symlink to the inbox and
one to `..`, and at once swaps each for a symlink to the inbox (the real folder
renamed aside); every round brings each folder back (a folder moved in) and swaps
it again. A guard that follows a symlinked folder, even once, walks (and watches)
the whole inbox again under a new name for each swap: tens of thousands of events.
Stops after `--rounds` rounds or `--seconds`, whichever comes first, and prints
how many swaps it made. Used by tests/test_watch_flood.py and bench/watch_flood.py.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def tiny_folder(folder: Path, inbox: Path) -> None:
    folder.mkdir()
    os.symlink(inbox, folder / "in")
    os.symlink("..", folder / "up")


def swap(folder: Path, aside: Path, inbox: Path) -> None:
    """`folder` becomes a symlink to the inbox; the real folder goes to `aside`."""
    link = folder.with_name(folder.name + ".new")
    os.symlink(inbox, link)
    os.rename(folder, aside)
    os.rename(link, folder)


def attack(inbox: Path, folders: int, rounds: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    names = [inbox / f"churn{n:03d}" for n in range(folders)]
    asides = [inbox / f"churn{n:03d}.aside" for n in range(folders)]
    swaps = 0
    for folder, aside in zip(names, asides, strict=True):
        tiny_folder(folder, inbox)
        swap(folder, aside, inbox)
        swaps += 1
    for _ in range(1, rounds):
        for folder, aside in zip(names, asides, strict=True):
            if time.monotonic() >= deadline:
                return swaps
            folder.unlink()
            os.rename(aside, folder)  # the folder moved back in
            swap(folder, aside, inbox)
            swaps += 1
    return swaps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inbox", type=Path)
    parser.add_argument("--folders", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    swaps = attack(args.inbox.resolve(), args.folders, args.rounds, args.seconds)
    print(f"swaps {swaps}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
