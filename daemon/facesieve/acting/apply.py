"""Apply: a judgement becomes a ledger intent, an action, and the ledger's word it is done.

The order is what makes a crash harmless: the intent (a pending row) is on disk
before the file moves, and `recover` (one recovery for every caller: `recovery`)
finishes or fails every pending row at the next start. Only `moves` touches
files; this module decides which call to make and records it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import ActionsConfig, ImagesConfig, Layout, ResolvedFolders
from ..errors import ActionError, ChangedError, ImageAccessError, LedgerError
from ..intake.layouts import SampleRules
from ..intake.safefs import HeldFile, Identity, is_symlink_refusal
from ..judging.judge import Judgement, NotJudged, Seen, Status
from ..judging.policy import Face, Verdict
from ..ledger.store import Ledger, LedgerRow
from ..logs import get_logger
from .lease import (
    OPEN_WRITER_LIMIT_SECONDS,
    UNLEASED_QUIET_SECONDS,
    ReadLease,
    StillWrittenError,
)
from .moves import (
    Action,
    Places,
    check_unchanged,
    delete_held,
    free_destination,
    move_held,
    plan,
    remove_partials,
)
from .recovery import recover_pending
from .samples import HeldMember, carry, hold_members

__all__ = ["Applier", "Outcome"]

STILL_WRITTEN_RETRY = 1.0  # seconds until a file open for writing is looked at again


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
    retry_in: float | None = None  # DEFERRED: seconds until it is worth another look
    # The sample's other files, where they are now (moved, or kept, with the image).
    members: tuple[Path, ...] = ()

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
            if self.members:
                data["members"] = [str(member) for member in self.members]
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
        unreadable_grace: float = 0.0,
        mode: int = 0o640,
        unleased_quiet: float = UNLEASED_QUIET_SECONDS,
        open_writer_limit: float = OPEN_WRITER_LIMIT_SECONDS,
        layout: Layout = "files",
        rules: SampleRules | None = None,
        images: ImagesConfig | None = None,
    ) -> None:
        self.folders = folders
        self.ledger = ledger
        self.dry_run = dry_run
        # Decisions to judge again although the file is unchanged (`scan --rejudge`).
        self.rejudge = rejudge
        # "unreadable" on a file changed less than this long ago is provisional
        # ([images] unreadable_grace_seconds): maybe an upload written in pieces.
        self.unreadable_grace = unreadable_grace
        # A file someone still has open for writing is not acted on (`lease`).
        self.unleased_quiet = unleased_quiet
        self.open_writer_limit = open_writer_limit
        self._said_no_lease = False
        self._log = get_logger()
        # The inbox and facesieve's folders, held by descriptor: every action works
        # relative to them and never follows a symlink.
        self.places = Places(folders, mode=mode) if folders is not None else None
        if self.places is not None and not dry_run:
            self.places.check_state_folders()
        # What a sample is: the image's verdict carries its members (`samples`).
        # The watch shares its inbox's rules, so that what `auto` learns holds here too.
        if rules is None and folders is not None:
            rules = SampleRules(layout, folders.root, images=images)
        self.rules = rules

    def close(self) -> None:
        if self.places is not None:
            self.places.close()

    def seen(self, path: Path) -> Seen | None:
        """The recorded decision that left a file at `path` in place, if any."""
        if self.ledger is None or self.dry_run:
            return None
        row = self.ledger.last_done(path)
        if row is None or not row.left_in_place:
            return None
        if self.rejudge is not None and self.rejudge(row):
            return None
        if row.state == "pending":
            # A restore or a person's verdict half-way: its row holds the inode it
            # moves, which a copy across filesystems does not keep; the bytes tell.
            return Seen(row.size, row.mtime_ns, row.sha256, f"ledger #{row.id}")
        return Seen.of_row(row)

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
        followed = self._follow_image(result, outcome)
        if followed is not None:
            outcome = followed
        elif self.folders is not None:
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
        assert self.places is not None
        judged = judgement.identity
        young = self.unreadable_grace - (time.time_ns() - judgement.ctime_ns) / 1e9
        if verdict is Verdict.UNREADABLE and young > 0:
            # Maybe an upload written in pieces: look again, never act on a piece.
            return self._deferred(outcome, "unreadable but changed moments ago", young)
        held = self._hold(path, judged)
        if isinstance(held, Outcome):
            return replace(outcome, status=held.status, reason=held.reason, destination=None)
        with held:
            members: list[HeldMember] = []
            try:
                if self.rules is not None:
                    image = (*held.parts, path.name)
                    members = hold_members(self.places, self.rules, image, folder)
                return self._act_on(
                    held, judgement, outcome, action, folder, destination, folders, members
                )
            finally:
                for member in members:
                    member.held.close()

    def _follow_image(self, judgement: Judgement, outcome: Outcome) -> Outcome | None:
        """A member that arrived after its image was moved or deleted follows it.

        Only a file that is no image itself (`not_image`) and whose image (by the
        layout's rules) was last decided away from the inbox; None: act as usual.
        """
        if (
            judgement.verdict is not Verdict.NOT_IMAGE
            or self.ledger is None
            or self.places is None
            or self.rules is None
            or self.dry_run
        ):
            return None
        root = self.places.root
        try:
            parts = root.parts(judgement.path)
        except ValueError:
            return None
        decision = None
        for image in self.rules.owners(parts):
            row = self.ledger.last_done(root.path.joinpath(*image))
            if row is not None and row.ref is None and not row.left_in_place:
                decision = row
                break
            if row is not None and row.ref is None and row.action == Action.DELETE:
                decision = row
                break
        if decision is None:
            return None
        held = self._hold(judgement.path, judgement.identity)
        if isinstance(held, Outcome):
            return replace(outcome, status=held.status, reason=held.reason, destination=None)
        with held:
            return self._join(held, judgement, outcome, decision)

    def _join(
        self, held: HeldFile, judgement: Judgement, outcome: Outcome, decision: LedgerRow
    ) -> Outcome:
        assert self.places is not None and self.ledger is not None
        destination = None
        base = None
        if decision.destination is not None:
            base, _ = self.places.base_of(Path(decision.destination))
            destination = free_destination(judgement.path, self.places.root.path, base.path)
        member = HeldMember((*held.parts, held.name), held, judgement.sha256, destination)
        self.ledger.ensure_unchanged()
        member_id = self.ledger.add_member(decision.id, member.intent())
        action = Action(decision.action)
        where = carry(
            [member], [member_id], action, self.places, None if base is None else base.path
        )
        self.ledger.member_landed(member_id, where[member_id])
        reason = f"a member of {decision.path} (ledger #{decision.id}): follows it"
        return replace(
            outcome,
            reason=reason,
            action=action.value,
            destination=where[member_id],
            verdict=Verdict(decision.verdict),
        )

    def _hold(self, path: Path, judged: Identity) -> HeldFile | Outcome:
        """The judged file, opened from the held root, if its name still refers to it."""
        assert self.places is not None
        root = self.places.root
        try:
            parts = root.parts(path)[:-1]
            folder_fd = root.open_folder(parts)
        except ValueError:
            return Outcome(path, Status.SKIPPED, reason="outside the folder: never touched")
        except OSError as error:
            why = (
                "a folder on its path is a symlink: never followed"
                if is_symlink_refusal(error)
                else f"its folder is gone: {error.strerror}"
            )
            return self._deferred(Outcome(path, Status.DECIDED), why)
        try:
            held = HeldFile(path, folder_fd, path.name)
        except ImageAccessError as error:
            return self._deferred(Outcome(path, Status.DECIDED), str(error))
        if held.identity != judged:
            held.close()
            return self._deferred(
                Outcome(path, Status.DECIDED), "it is not the file judged any more"
            )
        held.parts = parts
        return held

    def _act_on(
        self,
        held: HeldFile,
        judgement: Judgement,
        outcome: Outcome,
        action: Action,
        folder: Path | None,
        destination: Path | None,
        folders: ResolvedFolders,
        members: list[HeldMember],
    ) -> Outcome:
        assert self.places is not None
        root, parts = self.places.root, held.parts
        try:
            check_unchanged(held, root, parts)
        except ChangedError as error:
            return self._deferred(outcome, str(error))
        try:
            lease = self._lease(held, action, folder)
        except StillWrittenError as error:
            # A stalled upload looks finished: never act on it, whatever its verdict.
            return self._deferred(outcome, str(error), STILL_WRITTEN_RETRY)
        with lease:
            try:
                for member in members:
                    member.lease = self._lease(member.held, action, folder)
            except StillWrittenError as error:
                # A member still written (a caption half-way): the sample waits whole,
                # the image with it, never split (`samples`).
                for leased in members:
                    if leased.lease is not None:
                        leased.lease.release()
                why = f"its member {member.held.path.name}: {error}"
                return self._deferred(outcome, why, STILL_WRITTEN_RETRY)
            return self._act_leased(
                held, judgement, outcome, action, folder, destination, folders, members, lease
            )

    def _lease(self, held: HeldFile, action: Action, folder: Path | None) -> ReadLease:
        """A read lease on the held file: nobody may have it open for writing (`lease`).

        Raises:
            StillWrittenError: someone has it open for writing; or no lease can be
                taken, the action could lose bytes a writer adds (a copy to another
                filesystem, a delete), and it changed too recently.
        """
        assert self.places is not None
        lease = ReadLease.take(
            held.fd, held.identity, open_limit=self.open_writer_limit, quiet=self.unleased_quiet
        )
        if lease.missing is None:
            return lease
        if lease.open_for_writing:
            self._log.warning("acting_on_open_file", path=str(held.path), reason=lease.missing)
        elif not self._said_no_lease:
            # Once a run: the same cause (no CAP_LEASE, no leases there) holds for all.
            self._said_no_lease = True
            self._log.warning("no_lease", path=str(held.path), reason=lease.missing)
        if action is Action.DELETE:
            lease.require_quiet(held.identity, "a delete")
        elif folder is not None:
            there = os.fstat(self.places.state_folder(folder).fd).st_dev
            if there != held.identity.dev:
                lease.require_quiet(held.identity, "a copy to another filesystem")
        return lease

    def _act_leased(
        self,
        held: HeldFile,
        judgement: Judgement,
        outcome: Outcome,
        action: Action,
        folder: Path | None,
        destination: Path | None,
        folders: ResolvedFolders,
        members: list[HeldMember],
        lease: ReadLease,
    ) -> Outcome:
        assert self.places is not None
        root, parts = self.places.root, held.parts
        row_id = self._begin_row(held, judgement, action, destination, folders, members)
        try:
            landed: Path | None = None
            if destination is not None and folder is not None:
                landed = move_held(
                    held,
                    root,
                    parts,
                    destination,
                    self.places.state_folder(folder),
                    mode=self.places.mode,
                    sha256=judgement.sha256,
                    lease=lease,
                )
            elif action is Action.DELETE:
                delete_held(held, root, parts, sha256=judgement.sha256, lease=lease)
        except ChangedError as error:
            if self.ledger is not None and row_id is not None:
                self.ledger.fail(row_id, f"changed while acted on, nothing done: {error}")
            return self._deferred(outcome, str(error))
        except ActionError as error:
            if self.ledger is not None and row_id is not None:
                self.ledger.fail(row_id, str(error))
            return replace(outcome, status=Status.ERROR, reason=f"{outcome.reason}; {error}")
        except Exception as error:
            # Anything else between the intent and the action (a state folder that
            # cannot be opened, a read error in the last comparison) happened before
            # the file was touched: the row ends failed, never pending, one per retry.
            if self.ledger is not None and row_id is not None:
                self.ledger.fail(row_id, f"{type(error).__name__}: {error}; nothing done")
            raise
        kept = self._carry_members(members, row_id, action, folder, landed)
        return replace(outcome, destination=landed, members=kept)

    def _begin_row(
        self,
        held: HeldFile,
        judgement: Judgement,
        action: Action,
        destination: Path | None,
        folders: ResolvedFolders,
        members: list[HeldMember],
    ) -> int | None:
        """The ledger's intent row for the action, before anything is touched; None
        without a ledger."""
        if self.ledger is None:
            return None
        self.ledger.ensure_unchanged()  # never act with a decision no ledger keeps
        return self.ledger.begin(
            path=judgement.path,
            root=folders.root,
            size=judgement.size,
            mtime_ns=judgement.mtime_ns,
            mode=judgement.mode,
            sha256=judgement.sha256,
            faces=[f.as_dict() for f in judgement.faces],
            verdict=judgement.verdict.value,
            reason=judgement.reason,
            action=action.value,
            destination=destination,
            models=judgement.models,
            elapsed_ms=round(judgement.elapsed_ms, 1),
            policy=judgement.policy_fingerprint,
            identity=held.identity,
            members=[member.intent() for member in members],
        )

    def _carry_members(
        self,
        members: list[HeldMember],
        row_id: int | None,
        action: Action,
        folder: Path | None,
        landed: Path | None,
    ) -> tuple[Path, ...]:
        """The image went first; now its members follow it, each as the image went.

        Completes the ledger row, and returns where the members are now (those
        deleted left out).
        """
        assert self.places is not None
        ids = (
            [row.id for row in self.ledger.members(row_id)]
            if self.ledger is not None and row_id is not None
            else list(range(len(members)))
        )
        where = carry(members, ids, action, self.places, folder)
        if self.ledger is not None and row_id is not None:
            self.ledger.complete(row_id, landed, members=where)
        return tuple(
            place if place is not None else member.held.path
            for member, place in zip(members, where.values(), strict=True)
            if place is not None or action is not Action.DELETE
        )

    def _deferred(self, outcome: Outcome, why: str, retry_in: float = 0.5) -> Outcome:
        return replace(
            outcome,
            status=Status.DEFERRED,
            reason=f"{why}: nothing done, judged again",
            destination=None,
            retry_in=retry_in,
        )

    def recover(self) -> int:
        """Finish or fail every action a crash left half-done; returns how many it recovered.

        After it, each file is in exactly one place and its ledger row says which:
        a move that happened is completed (its source unlinked if it lingered), one
        that did not is marked failed so the file, still in the inbox, is judged again.
        A lingering source is unlinked only if it is still the inode the row moved,
        with the judged bytes, and no later row shows it judged or restored since.
        This writer holds the ledger's lock, so it takes over the model's pending
        decisions at once; a person's or a restore's row only once it is older than
        `recovery.PENDING_GUARD` (see `recovery`).
        """
        if self.ledger is None or self.folders is None or self.places is None:
            return 0
        for folder in self.folders.managed():
            for partial in remove_partials(folder):
                self._log.warning("partial_removed", path=str(partial))
        recovered = recover_pending(
            self.ledger, self.places, decisions=True, later_rows=self.ledger.later_rows
        )
        return len(recovered)

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
                **({"members": [str(m) for m in outcome.members]} if outcome.members else {}),
            )
        elif outcome.status is Status.KNOWN:
            self._log.debug("known", **fields)
        elif outcome.status is Status.SKIPPED:
            self._log.info("skipped", **fields)
        elif outcome.status is Status.DEFERRED:
            self._log.info("deferred", **fields, retry_in=outcome.retry_in)
        else:
            self._log.warning("not_judged", **fields)
        return outcome
