"""The observer in-process (issue 18): no watch ever through a symlinked folder.

Plumbing only, no model: tests/test_watch_flood.py runs the real daemon under attack.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from facesieve.config import Config, watch_folders
from facesieve.intake.inbox import Inbox
from facesieve.intake.observer import InboxObserver, Settler


class Offers:
    def __init__(self) -> None:
        self.offered: list[Path] = []
        self.settling: list[Path] = []
        self.reconciles: list[str] = []


def observer_on(inbox: Path, offers: Offers, polling: bool = False) -> InboxObserver:
    config = Config.model_validate(
        {"folders": {"inbox": str(inbox)}, "watch": {"polling": polling}}
    )
    folders = watch_folders(config)
    settler = Settler(60.0, offers.offered.append)
    settler.wait_for = offers.settling.append  # type: ignore[method-assign]
    return InboxObserver(
        Inbox.of(config, folders),
        config.watch,
        settler,
        offer=offers.offered.append,
        reconcile=offers.reconciles.append,
    )


def fill(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    files = [folder / f"f{n:03d}.jpg" for n in range(count)]
    for path in files:
        path.write_bytes(b"x")
    return files


def test_a_folder_swapped_for_a_symlink_is_never_watched_through_it(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    fill(inbox / "real" / "sub", 1)
    offers = Offers()
    observer = observer_on(inbox, offers)
    observer.start()
    try:
        (emitter,) = observer._observer.emitters
        deadline = time.monotonic() + 10
        while emitter._inotify is None and time.monotonic() < deadline:
            time.sleep(0.01)
        group = emitter._inotify
        before = dict(group._active_callbacks_by_path)
        # What watchdog does for a folder created (or moved in) that the uploader has
        # swapped for a symlink to the inbox by the time watchdog gets to it.
        (inbox / "swapped").symlink_to(inbox)
        with group._lock:
            group._add_all_callbacks(os.fsencode(inbox / "swapped"))
            simulated = group._recursive_simulate(os.fsencode(inbox / "swapped"))
        after = dict(group._active_callbacks_by_path)
    finally:
        observer.stop()
        observer.join(10)
    assert after == before, sorted(set(after) - set(before))
    assert simulated == []
    assert not [p for p in after if p.startswith(os.fsencode(inbox / "swapped"))]
