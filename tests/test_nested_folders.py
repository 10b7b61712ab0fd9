"""Nested folders created together never kill watchdog's inotify reader.

The reader adds a watch to each new folder and walks it for folders inside; when
`q/sub` is made right after `q` (a quarantine mirroring an upload's folder does
that, ~0.1 ms apart) the walk after `q`'s event watches `q/sub` and `q/sub`'s own
event adds it again. watchdog warns about that on the reader thread, and under
`filterwarnings = error` (this suite; `PYTHONWARNINGS=error` in production) the
warning is an exception that ends the reader: no inotify event is seen after it.
This was the flaky test_safe_inbox.py case `[same-fs-quarantine-watch]`.

The real observer on a real folder; the race is the kernel's, so it is run many
times (on the unfixed reader it struck within the first 100 pairs here).
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

from facesieve.config import Config
from facesieve.intake.inbox import Inbox
from facesieve.intake.observer import InboxObserver, Settler

PAIRS = 400


def test_nested_folders_made_together_never_end_the_reader(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = Config.model_validate({"folders": {"inbox": str(inbox)}})
    offered: list[Path] = []
    lock = threading.Lock()

    def offer(path: Path) -> None:
        with lock:
            offered.append(path)

    observer = InboxObserver(
        Inbox.of(config, config.resolve_folders(inbox)),
        config.watch,
        Settler(0.0, offer),
        offer=offer,
        reconcile=lambda why: None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as the suite's filterwarnings = error does
        observer.start()
        try:
            for index in range(PAIRS):
                (inbox / f"q{index}" / "sub").mkdir(parents=True)
            # The reader still reads: a file closed now is offered.
            (inbox / "after.txt").write_bytes(b"x")
            deadline = time.monotonic() + 15
            while inbox / "after.txt" not in offered and time.monotonic() < deadline:
                time.sleep(0.05)
            watchdog = observer._observer  # its threads, read as on any watchdog 7
            threads = [watchdog, *watchdog.emitters, watchdog._inotify_fd]
            dead = [t.name for t in threads if not t.is_alive()]
        finally:
            observer.stop()
            observer.join(10)
    assert dead == []
    assert inbox / "after.txt" in offered
