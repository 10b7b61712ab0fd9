"""The observer in-process (issue 18): arrived folders walked once per burst and within
a budget, no watch ever through a symlinked folder, and facesieve's threads named.

Plumbing only, no model: tests/test_watch_flood.py runs the real daemon under attack.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from structlog.testing import capture_logs

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


def walk_pending(observer: InboxObserver, **limits: int) -> None:
    # Before issue 18 there was nothing pending: `_arrived` walked on the spot.
    walk = getattr(observer, "walk_arrivals", None)
    if walk is not None:
        walk(**limits)


def test_a_burst_of_events_for_one_folder_walks_it_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    files = fill(inbox / "album", 5) + fill(inbox / "album" / "deeper", 3)
    offers = Offers()
    observer = observer_on(inbox, offers, polling=True)
    for _ in range(200):  # one folder, announced again and again (moved back and forth)
        observer._arrived(inbox / "album", True)
        observer._arrived(inbox / "album" / "deeper", True)
    walk_pending(observer)
    assert sorted(offers.offered) == sorted(files)
    walk_pending(observer)
    assert len(offers.offered) == len(files)  # nothing left to walk again


def test_arrival_walks_are_bounded_per_tick_and_the_rest_left_to_a_pass(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    big = fill(inbox / "big", 30)
    small = [fill(inbox / f"small{n}", 1)[0] for n in range(5)]
    offers = Offers()
    observer = observer_on(inbox, offers, polling=True)
    for n in range(5):
        observer._arrived(inbox / f"small{n}", False)
    observer._arrived(inbox / "big", True)
    with capture_logs() as logs:
        # "big" sorts first: 10 of its 30 files, then the budget is spent.
        assert observer.walk_arrivals(max_folders=2, max_files=10) == 1
    assert len(offers.offered) == 10 and set(offers.offered) <= set(big)
    assert offers.reconciles == ["arrival walk over budget"]
    assert observer.arrivals_deferred == 1
    deferred = [e for e in logs if e["event"] == "arrivals_deferred"]
    assert deferred and deferred[0]["path"] == str(inbox / "big")
    assert observer.walk_arrivals(max_folders=2, max_files=10) == 2
    assert observer.walk_arrivals(max_folders=2, max_files=10) == 2
    assert observer.walk_arrivals(max_folders=2, max_files=10) == 1
    assert observer.walk_arrivals(max_folders=2, max_files=10) == 0
    assert sorted(offers.settling) == sorted(small)  # created folders: their files settle


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


def test_the_observer_threads_are_named_facesieve(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for polling in (False, True):
        before = set(threading.enumerate())
        observer = observer_on(inbox, Offers(), polling=polling)
        observer.start()
        try:
            started = set(threading.enumerate()) - before  # start() started them all
        finally:
            observer.stop()
            observer.join(10)
        assert started, polling
        assert all(t.name.startswith("facesieve-") for t in started), [t.name for t in started]


def test_a_symlinked_folder_is_never_offered_as_a_file(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    fill(inbox / "real", 1)
    (inbox / "to_inbox").symlink_to(inbox)  # what the uploader renames in, once per swap
    (inbox / "to_file.jpg").symlink_to(inbox / "real" / "f000.jpg")
    offers = Offers()
    observer = observer_on(inbox, offers, polling=True)
    with capture_logs() as logs:
        observer.offer(inbox / "to_inbox")
        observer.offer(inbox / "to_file.jpg")
    # A symlinked folder is skipped where it lies, as the inbox's walk skips it; a
    # symlink to a file still goes to the judge, which says why it is skipped.
    assert offers.offered == [inbox / "to_file.jpg"]
    assert [(e["event"], e["path"]) for e in logs] == [("skipped", str(inbox / "to_inbox"))]


def test_facesieve_s_own_opens_and_reads_raise_no_events(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    fill(inbox / "real" / "sub", 1)
    observer = observer_on(inbox, Offers())
    observer.start()
    try:
        masks = []
        for fd in os.listdir("/proc/self/fdinfo"):
            try:
                text = Path(f"/proc/self/fdinfo/{fd}").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("inotify wd:"):
                    fields = dict(f.split(":", 1) for f in line.split()[1:])
                    masks.append(int(fields["mask"], 16))
    finally:
        observer.stop()
        observer.join(10)
    assert len(masks) >= 3  # the inbox, real, real/sub
    # IN_OPEN, IN_CLOSE_NOWRITE, IN_ACCESS: what every walk, audit and judge's read
    # caused, each then carried through watchdog's threads for nothing.
    assert not [hex(m) for m in masks if m & (0x20 | 0x10 | 0x01)]
