"""An error after the intent is on disk ends its row, never leaves it pending (issue 16).

Between `ledger.begin` and the action, more can fail than a changed file
(ChangedError) or a failed move (ActionError): the quarantine folder cannot be
opened (`Places.state_folder`), the bytes cannot be read back for the last
comparison (`_digest`). Each such error fails the row, logs why, and leaves the
file where it was; a retry writes one row more, which fails the same way.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from facesieve.acting import moves
from facesieve.config import Config
from facesieve.engines.local import Engine
from facesieve.judging.judge import Status
from facesieve.ledger.store import Ledger

from .safe_attacks import RED, ColourModel, patched


def broken(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.EIO, "Input/output error")


@pytest.mark.parametrize(
    ("reject", "owner", "name"),
    [("quarantine", moves.Places, "state_folder"), ("delete", moves, "_digest")],
)
def test_an_os_error_after_the_intent_fails_the_row(
    tmp_path: Path, reject: str, owner: Any, name: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    upload = inbox / "red.bmp"
    upload.write_bytes(RED)
    config = Config.model_validate({"actions": {"reject": reject}})
    folders = config.resolve_folders(inbox)
    with Ledger(folders.ledger) as ledger, capture_logs() as logs:
        engine = Engine(config, ColourModel(), folders=folders, ledger=ledger)  # type: ignore[arg-type]
        with patched(owner, name, broken):
            outcomes = [engine.process(upload) for _ in range(3)]
        engine.close()
        rows = list(ledger.rows())

    assert [o.status for o in outcomes] == [Status.ERROR] * 3
    assert upload.read_bytes() == RED  # where it was, untouched
    assert [r.state for r in rows] == ["failed"] * 3  # none pending
    assert all("Input/output error" in (r.error or "") for r in rows)
    failures = [e for e in logs if e["event"] == "not_judged"]
    assert len(failures) == 3 and all("Input/output error" in e["reason"] for e in failures)
