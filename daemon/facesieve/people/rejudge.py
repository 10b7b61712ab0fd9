"""Files decided under another policy or other models, and judging them again.

Every decision records the fingerprints of the policy and the models it was
made under (see `ledger.py`; rows older than the columns have no policy
fingerprint and count as decided under another one). After a change of
`require` or of a threshold, `scan` says how many files that concerns, and
`scan --rejudge` judges them again:

  - `kept` (the default): files the model kept that are still where they were
    judged; the engine judges them as if new, and acts on the new verdict;
  - `all`: those, and the files in review or quarantine, which are first moved
    back to where they were judged (a restore, as `facesieve restore` does).

A file a person settled (a human verdict) or restored is never judged again
because of a policy change: a person's decision stands.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..acting.moves import Action
from ..config import Config
from ..judging.policy import Verdict
from ..ledger.reading import Fate, fate
from ..ledger.store import Ledger, LedgerRow, models_fingerprint, policy_fingerprint
from ..logs import get_logger

__all__ = ["Rejudge", "Stale", "prepare_rejudge", "stale_decisions"]

Rejudge = Literal["kept", "all"]


@dataclass(frozen=True, slots=True)
class Stale:
    """Decisions made under another policy or other models whose files facesieve still holds."""

    kept: list[LedgerRow] = field(default_factory=list)  # kept and still where judged
    moved: list[LedgerRow] = field(default_factory=list)  # in review or quarantine

    @property
    def count(self) -> int:
        return len(self.kept) + len(self.moved)

    def as_dict(self) -> dict[str, int]:
        return {"kept": len(self.kept), "in_review_or_quarantine": len(self.moved)}


def stale_decisions(
    ledger: Ledger, config: Config, models: Mapping[str, str], root: Path | None = None
) -> Stale:
    """The model's decisions under `root` not made under `config.policy` and `models`."""
    policy = policy_fingerprint(config.policy.model_dump())
    current_models = models_fingerprint(models)
    latest: dict[str, int] = {}  # path -> id of the latest completed row about it
    for row in ledger.rows():
        if row.state == "done":
            latest[row.path] = row.id
    restores = ledger.restores()
    stale = Stale()
    for decision in ledger.decisions():
        if not _decided_otherwise(decision, policy, current_models, root):
            continue
        current, where = fate(decision, restores.get(decision.id))
        if where is None or not os.path.lexists(where):
            continue
        if current is Fate.LEFT and decision.verdict == Verdict.KEEP:
            if latest.get(decision.path) == decision.id:
                stale.kept.append(decision)
        elif current in (Fate.IN_REVIEW, Fate.QUARANTINED) and decision.action in (
            Action.REVIEW,
            Action.QUARANTINE,
        ):
            stale.moved.append(decision)
    return stale


def _decided_otherwise(
    decision: LedgerRow, policy: str, current_models: str, root: Path | None
) -> bool:
    """A model's decision (no person's, none a person settled) under `root`, made under
    another policy or other models than these."""
    if decision.is_human or decision.settled_by is not None:
        return False
    if decision.policy_fingerprint == policy and decision.models_key == current_models:
        return False
    return root is None or _inside(Path(decision.path), root)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def prepare_rejudge(
    ledger: Ledger,
    config: Config,
    models: Mapping[str, str],
    root: Path,
    mode: Rejudge | None,
    *,
    dry_run: bool = False,
) -> tuple[Stale, Callable[[LedgerRow], bool] | None]:
    """Count what was decided under another policy; with `mode`, make it judgeable again.

    Returns the stale decisions and, with `mode`, the engine's `rejudge` predicate.
    With `all`, files in review or quarantine go back to where they were judged
    first (unless `dry_run`); one whose original path is taken stays where it is.
    """
    log = get_logger()
    stale = stale_decisions(ledger, config, models, root)
    if mode is None:
        if stale.count:
            log.warning("decided_under_other_policy", **stale.as_dict())
        return stale, None
    chosen = {d.id for d in stale.kept}
    if mode == "all":
        # The restore command's module, imported here: the daemon only counts stale
        # decisions, and must not load command code to do it.
        from .restore import restore_decision

        for decision in stale.moved:
            if dry_run:
                continue
            problem = restore_decision(ledger, decision)
            if problem is None:
                chosen.add(decision.id)
            else:
                log.warning("rejudge_not_restored", id=decision.id, reason=problem)
    log.info("rejudging", files=len(chosen), mode=mode)

    def rejudge(row: LedgerRow) -> bool:
        # A decision chosen, or the restore that just put its file back.
        return row.id in chosen or (row.is_restore and row.ref in chosen)

    return stale, rejudge
