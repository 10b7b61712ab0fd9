"""Apply: a judgement becomes a ledger intent, an action, and the ledger's word it is done.

The order is what makes a crash harmless: the intent (a pending row) is on disk
before the file moves, and `recover` settles every pending row at the next start.
Only `actions` touches files; this module decides which call to make and records it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .actions import (
    Action,
    delete_file,
    free_destination,
    move_file,
    plan,
    remove_partials,
    resume_move,
)
from .config import ActionsConfig, ResolvedFolders
from .errors import ActionError, LedgerError
from .judge import Judgement, NotJudged, Seen, Status
from .ledger import Ledger, LedgerRow
from .logs import get_logger
from .policy import Face, Verdict

__all__ = ["Applier", "Outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one file: its verdict, if any, and what was done about it."""

    path: Path
    status: Status
    verdict: Verdict | None = None
    reason: str = ""
    faces: tuple[Face, ...] = ()
    action: str | None = None
    destination: Path | None = None
    elapsed_ms: float = 0.0
    sha256: str | None = None
    size: int | None = None

    def as_dict(self, *, with_action: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": str(self.path),
            "verdict": None if self.verdict is None else self.verdict.value,
            "reason": self.reason,
            "faces": [face.as_dict() for face in self.faces],
        }
        if with_action:
            data["action"] = self.action
            data["destination"] = None if self.destination is None else str(self.destination)
        return data


class Applier:
    """Acts on judgements in `folders` and records them in `ledger`.

    Without folders it only reports (`check`); with `dry_run` it plans and reports.
    Like the ledger it holds, an applier belongs to one thread.
    """

    def __init__(
        self,
        *,
        folders: ResolvedFolders | None = None,
        ledger: Ledger | None = None,
        dry_run: bool = False,
        rejudge: Callable[[LedgerRow], bool] | None = None,
    ) -> None:
        self.folders = folders
        self.ledger = ledger
        self.dry_run = dry_run
        # Decisions to judge again although the file is unchanged (`scan --rejudge`).
        self.rejudge = rejudge
        self._log = get_logger()

    def seen(self, path: Path) -> Seen | None:
        """The recorded decision that left a file at `path` in place, if any."""
        if self.ledger is None or self.dry_run:
            return None
        row = self.ledger.last_done(path)
        if row is None or not row.left_in_place:
            return None
        if self.rejudge is not None and self.rejudge(row):
            return None
        return Seen(row.size, row.mtime_ns, row.sha256, f"ledger #{row.id}")

    def apply(self, result: Judgement | NotJudged, actions: ActionsConfig) -> Outcome:
        """Act on one judgement as `actions` says, record it, and log it. Never raises
        for one file's trouble: an action that fails leaves the file where it was.
        Only a ledger that cannot be written (`LedgerError`) ends the run: no decision
        could be recorded any more."""
        try:
            return self._apply(result, actions)
        except LedgerError:
            raise
        except Exception as error:  # noqa: BLE001 - one odd file must not end a scan
            reason = f"{type(error).__name__}: {error}"
            return self._report(Outcome(result.path, Status.ERROR, reason=reason), None)

    def _apply(self, result: Judgement | NotJudged, actions: ActionsConfig) -> Outcome:
        if isinstance(result, NotJudged):
            return self._report(Outcome(result.path, result.status, reason=result.reason), None)
        started = time.perf_counter()
        outcome = Outcome(
            result.path,
            Status.DECIDED,
            verdict=result.verdict,
            reason=result.reason,
            faces=result.faces,
            sha256=result.sha256,
            size=result.size,
        )
        if self.folders is not None:
            outcome = self._act(result, outcome, actions, self.folders)
        elapsed = result.elapsed_ms + (time.perf_counter() - started) * 1000
        return self._report(replace(outcome, elapsed_ms=round(elapsed, 1)), result.models)

    def _act(
        self,
        judgement: Judgement,
        outcome: Outcome,
        actions: ActionsConfig,
        folders: ResolvedFolders,
    ) -> Outcome:
        verdict = judgement.verdict
        action, folder = plan(verdict, actions, folders)
        path = judgement.path
        destination = free_destination(path, folders.root, folder) if folder else None
        outcome = replace(outcome, action=action.value, destination=destination)
        if self.dry_run:
            return outcome
        try:
            info = os.lstat(path)
        except OSError:
            return replace(outcome, status=Status.SKIPPED, reason="vanished while judged")
        if (info.st_size, info.st_mtime_ns) != (judgement.size, judgement.mtime_ns):
            return replace(
                outcome, status=Status.SKIPPED, reason="changed while judged; judged again later"
            )
        row_id = None
        if self.ledger is not None:
            self.ledger.ensure_unchanged()  # never act with a decision no ledger keeps
            row_id = self.ledger.begin(
                path=path,
                root=folders.root,
                size=judgement.size,
                mtime_ns=judgement.mtime_ns,
                mode=judgement.mode,
                sha256=judgement.sha256,
                faces=[f.as_dict() for f in judgement.faces],
                verdict=verdict.value,
                reason=judgement.reason,
                action=action.value,
                destination=destination,
                models=judgement.models,
                elapsed_ms=round(judgement.elapsed_ms, 1),
                policy=judgement.policy_fingerprint,
            )
        try:
            landed: Path | None = None
            if destination is not None:
                landed = move_file(path, destination)
            elif action is Action.DELETE:
                delete_file(path)
        except ActionError as error:
            if self.ledger is not None and row_id is not None:
                self.ledger.fail(row_id, str(error))
            return replace(outcome, status=Status.ERROR, reason=f"{outcome.reason}; {error}")
        if self.ledger is not None and row_id is not None:
            self.ledger.complete(row_id, landed)
        return replace(outcome, destination=landed)

    def recover(self) -> int:
        """Settle every action a crash left half-done; returns how many were pending.

        After it, each file is in exactly one place and its ledger row says which:
        a move that happened is completed (its source unlinked if it lingered), one
        that did not is marked failed so the file, still in the inbox, is judged again.
        """
        if self.ledger is None or self.folders is None:
            return 0
        for folder in self.folders.managed():
            for partial in remove_partials(folder):
                self._log.warning("partial_removed", path=str(partial))
        pending = self.ledger.pending()
        for row in pending:
            source = Path(row.path)
            if row.action == Action.DELETE:
                done = not os.path.lexists(source)
                landed = None
            elif row.destination is not None and row.destination != row.path:
                landed = resume_move(source, Path(row.destination), row.sha256)
                done = landed is not None
            else:
                done, landed = True, None
            if done:
                self.ledger.complete(row.id, landed)
            else:
                self.ledger.fail(row.id, "interrupted before the action; judged again")
            self._log.warning(
                "recovered",
                path=row.path,
                action=row.action,
                completed=done,
                destination=None if landed is None else str(landed),
            )
        return len(pending)

    def _report(self, outcome: Outcome, models: dict[str, str] | None) -> Outcome:
        fields: dict[str, Any] = {"path": str(outcome.path), "reason": outcome.reason}
        if outcome.status is Status.DECIDED:
            models = models or {}
            self._log.info(
                "decision",
                **fields,
                verdict=outcome.verdict,
                faces=[f.as_dict() for f in outcome.faces],
                action=outcome.action,
                destination=None if outcome.destination is None else str(outcome.destination),
                sha256=outcome.sha256,
                size=outcome.size,
                elapsed_ms=outcome.elapsed_ms,
                dry_run=self.dry_run,
                detector=models.get("detector"),
                gender_model=models.get("gender"),
            )
        elif outcome.status is Status.KNOWN:
            self._log.debug("known", **fields)
        elif outcome.status is Status.SKIPPED:
            self._log.info("skipped", **fields)
        else:
            self._log.warning("not_judged", **fields)
        return outcome
