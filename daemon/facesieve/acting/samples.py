"""A sample's members go wherever its image goes (issue 17).

The image is judged; its members (`intake.layouts`: a caption, a metadata file,
Scrapy's thumbnails) are not. When the image's verdict moves or deletes it, each
member is held by descriptor as the image is, recorded in the same ledger intent
(`Ledger.begin(members=...)`), and moved or deleted right after the image, through
the same `moves` calls. The image goes first: so after a crash, where the image
is decides where the sample belongs. Recovery (`recover_members`) carries every
member still behind an image that had moved, and touches none of an image that
had not: a sample is never left split.

Members move under the image's lease rule (`lease`): each is leased with the
image, and one still open for writing defers the whole sample (judged again once
quiet), so a caption is never moved half-written nor the sample split. A member
is not judged, so a member that changed since it was held (a writer rewriting its
caption, closed again) still goes with its image: what belongs to the sample is
its name, not its bytes. Only a member that cannot be moved at all (an I/O error,
or a writer that opened it while it moved) stays behind, and says so
(`member_left`); it follows its image when next judged (`Applier._follow_image`).
Restore, approve, reject and undo move the image; `follow` brings its members the
same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import ActionError, ChangedError, ImageAccessError
from ..intake.layouts import DescriptorView, SampleRules
from ..intake.safefs import Folder, HeldFile
from ..judging.images import descriptor_sha256
from ..ledger.store import LedgerRow, MemberIntent, MemberRow
from ..logs import get_logger
from .lease import ReadLease, StillWrittenError
from .moves import (
    Action,
    Places,
    delete_file,
    delete_held,
    free_destination,
    identity_of,
    move_file,
    move_held,
    purge_file,
    restore_file,
    resume_move,
)

__all__ = [
    "HeldMember",
    "MemberLedger",
    "carry",
    "follow",
    "hold_members",
    "purge_members",
    "recover_members",
]


@dataclass(slots=True)
class HeldMember:
    """One member of a sample, held open until its image has been acted on."""

    parts: tuple[str, ...]
    held: HeldFile
    sha256: str
    destination: Path | None
    # Taken with the image's (`Applier`): nobody writes the member while it moves.
    lease: ReadLease | None = None

    def intent(self) -> MemberIntent:
        return MemberIntent(self.held.path, self.destination, self.sha256, self.held.identity)


def hold_members(
    places: Places, rules: SampleRules, image_parts: tuple[str, ...], folder: Path | None
) -> list[HeldMember]:
    """The members of the image at `image_parts` (below the held root), each held
    open, with its bytes' digest and, when the image moves into `folder`, its own
    free destination there. A member that vanished or is no regular file is none."""
    root = places.root
    found: list[HeldMember] = []
    for parts in rules.members(image_parts, DescriptorView(root.fd)):
        path = root.path.joinpath(*parts)
        try:
            folder_fd = root.open_folder(parts[:-1])
        except OSError:
            continue
        try:
            held = HeldFile(path, folder_fd, parts[-1])
        except ImageAccessError:
            continue  # gone, a symlink, or no regular file: nothing to carry
        held.parts = parts[:-1]
        try:
            digest = descriptor_sha256(held.fd)
        except OSError:
            held.close()
            continue
        destination = free_destination(path, root.path, folder) if folder else None
        found.append(HeldMember(parts, held, digest, destination))
    return found


def carry(
    members: Sequence[HeldMember],
    ids: Sequence[int],
    action: Action,
    places: Places,
    folder: Path | None,
) -> dict[int, Path | None]:
    """Move (or delete) each member as its image was; returns where each member is,
    by its ledger row's id (`ids`, in the members' order)."""
    log = get_logger()
    landed: dict[int, Path | None] = {}
    for member, member_id in zip(members, ids, strict=True):
        where: Path | None = None
        try:
            if member.destination is not None and folder is not None:
                where = _move(member, places, places.state_folder(folder))
            elif action is Action.DELETE:
                _delete(member, places)
        except (ActionError, OSError) as error:
            log.error("member_left", path=str(member.held.path), reason=str(error))
        finally:
            if member.lease is not None:
                member.lease.release()
            member.held.close()
        landed[member_id] = where
    return landed


def _move(member: HeldMember, places: Places, base: Folder) -> Path:
    assert member.destination is not None
    held, root = member.held, places.root
    try:
        return move_held(
            held,
            root,
            member.parts[:-1],
            member.destination,
            base,
            mode=places.mode,
            sha256=member.sha256,
            lease=member.lease,
        )
    except StillWrittenError as error:
        # Opened for writing while it moved: it stays (`member_left`), judged again
        # later, and follows its image then (`Applier._follow_image`).
        raise ActionError(str(error)) from error
    except ChangedError:
        # Rewritten since it was held: it is still the sample's member by its name.
        return move_file(
            held.path, member.destination, mode=places.mode, base=base, source_base=root
        )


def _delete(member: HeldMember, places: Places) -> None:
    try:
        delete_held(
            member.held, places.root, member.parts[:-1], sha256=member.sha256, lease=member.lease
        )
    except StillWrittenError as error:
        raise ActionError(str(error)) from error
    except ChangedError:
        delete_file(member.held.path, base=places.root)


class MemberLedger(Protocol):
    def members(self, decision_id: int) -> list[MemberRow]: ...


def _base(places: Places | None, path: Path) -> Folder | None:
    if places is None:
        return None
    try:
        return places.base_of(path)[0]
    except ValueError:
        return None


def recover_members(
    ledger: MemberLedger, places: Places | None, row: LedgerRow, completed: bool
) -> dict[int, Path | None]:
    """After a crash: where each member of a model's pending decision is, once its
    image's move is recovered. The image had moved (`completed`): every member still
    at its source follows it now. It had not: the members never left (the image
    goes first), and nothing is touched."""
    found: dict[int, Path | None] = {}
    if not completed:
        return found
    log = get_logger()
    for member in ledger.members(row.id):
        if member.landed is not None:
            found[member.id] = Path(member.landed)
            continue
        source = Path(member.path)
        source_base = _base(places, source)
        now = identity_of(source, source_base)
        ours = now is not None and (member.inode is None or (now.dev, now.ino) == member.inode)
        where: Path | None = None
        try:
            if row.action == Action.DELETE:
                if ours:
                    delete_file(source, base=source_base)
            elif member.destination is not None:
                planned = Path(member.destination)
                planned_base = _base(places, planned)
                where = resume_move(
                    source,
                    planned,
                    member.sha256,
                    source_base=source_base,
                    planned_base=planned_base,
                    inode=member.inode,
                )
                if where is None and ours:
                    mode = places.mode if places is not None else 0o640
                    where = move_file(
                        source, planned, mode=mode, base=planned_base, source_base=source_base
                    )
        except ActionError as error:
            log.error("member_left", path=str(source), reason=str(error))
        found[member.id] = where
    return found


def follow(
    ledger: MemberLedger,
    places: Places | None,
    decision: LedgerRow,
    image_at: Path | None,
    *,
    exact: bool = False,
) -> dict[int, Path | None]:
    """A follow-up move (a restore, a person's verdict, an undo) took the decision's
    image to `image_at` (None: deleted): its members go the same way, each to its own
    path below the folder the image is now in (`exact`: that name, never a `~N`
    one, as a restore puts a file back). Returns where each member is now."""
    log = get_logger()
    found: dict[int, Path | None] = {}
    members = ledger.members(decision.id)
    if not members or places is None:
        return found
    root = Path(decision.root)
    target_base: Folder | None = None
    if image_at is not None:
        target_base = _base(places, image_at)
        if target_base is None:
            return found
    for member in members:
        current = Path(member.landed) if member.landed is not None else Path(member.path)
        current_base = _base(places, current)
        if identity_of(current, current_base) is None:
            continue  # gone already (or never there): nothing to carry
        try:
            if image_at is None:
                delete_file(current, base=current_base)
                found[member.id] = None
                continue
            assert target_base is not None
            relative = Path(member.path).relative_to(root)
            target = target_base.path / relative
            if target == current:
                continue
            if exact:
                restore_file(
                    current,
                    target,
                    source_base=current_base,
                    original_base=target_base,
                    mode=places.mode,
                )
                found[member.id] = target
            else:
                found[member.id] = move_file(
                    current, target, mode=places.mode, base=target_base, source_base=current_base
                )
        except (ActionError, ValueError) as error:
            log.error("member_left", path=str(current), reason=str(error))
    return found


def purge_members(ledger: MemberLedger, places: Places, decision: LedgerRow) -> int:
    """`purge`: delete the quarantined members of a decision, before its image (so that
    a purge cut short leaves the image, purged next time, never a member nobody lists).
    A member holding other bytes than it was moved with is left alone. Returns how many
    went."""
    log = get_logger()
    purged = 0
    for member in ledger.members(decision.id):
        if member.landed is None or not places.is_state(Path(member.landed)):
            continue
        landed = Path(member.landed)
        try:
            if purge_file(landed, member.sha256, base=places.base_of(landed)[0]):
                purged += 1
        except ActionError as error:
            log.warning("member_left", path=str(landed), reason=str(error))
    return purged
