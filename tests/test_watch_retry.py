"""`watch` honours `Outcome.retry_in`: a young unreadable file is looked at again when its
grace ends, not decoded again every time it has been quiet for settle_seconds."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from .conftest import DATA, labelled
from .daemon_util import Daemon, write_config

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]

_GRACE = 4.0
_SETTLE = 0.3


def test_a_young_unreadable_file_is_judged_again_when_its_grace_ends(
    tmp_path: Path, deepface_home: Path
) -> None:
    labelled("fairface")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = write_config(
        tmp_path / "c.toml",
        inbox,
        watch={"settle_seconds": _SETTLE},
        images={"unreadable_grace_seconds": _GRACE},
    )
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    upload = inbox / "upload.jpg"
    try:
        daemon.wait_for("reconciled")
        # The first bytes of a photo: an upload cut short, or still coming in pieces.
        upload.write_bytes((DATA / "fairface" / "fairface_0004.jpg").read_bytes()[:3000])
        written = time.time()
        decisions = daemon.wait_for("decision", timeout=60)
    finally:
        code = daemon.stop()
    assert code == 0
    assert [(e["path"], e["verdict"]) for e in decisions] == [(str(upload), "unreadable")]
    decided = datetime.fromisoformat(decisions[0]["timestamp"]).timestamp()
    assert decided - written >= _GRACE - 0.5
    looks = [e for e in daemon.events("deferred") if e["path"] == str(upload)]
    # Deferred once (unreadable while young), then judged when the grace is over:
    # not once every settle_seconds (about _GRACE / _SETTLE times) in between.
    assert len(looks) <= 2, [(e["timestamp"], e["reason"]) for e in looks]
    assert looks[0]["retry_in"] > _GRACE - 1.5
