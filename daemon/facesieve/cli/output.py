"""How `check` and `scan` print an outcome: one line a file, or one JSON object."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, TextIO

from ..paths import json_safe

if TYPE_CHECKING:
    from ..acting.apply import Outcome

__all__ = ["print_outcome"]


def print_outcome(
    outcome: Outcome,
    *,
    as_json: bool,
    with_action: bool,
    dry_run: bool = False,
    stream: TextIO | None = None,
) -> None:
    stream = stream or sys.stdout
    if as_json:
        record = json.dumps(json_safe(outcome.as_dict(with_action=with_action)), ensure_ascii=False)
        print(record, file=stream, flush=True)
        return
    where = ""
    if with_action and outcome.destination is not None:
        where = f" {'would move' if dry_run else 'moved'} to {outcome.destination}"
    elif with_action and outcome.action == "delete":
        where = " would be deleted" if dry_run else " deleted"
    verdict = "" if outcome.verdict is None else outcome.verdict.value
    print(f"{verdict:<10} {outcome.path}  ({outcome.reason}){where}", file=stream, flush=True)
