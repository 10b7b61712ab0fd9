"""`approve` / `reject` and human verdicts: the file moves once, the ledger says who and why.

Ledgers are built by hand as the engine writes them (see test_restore.judged), so
every case is reached in milliseconds; the review page's browser tests run the
same decisions on a real scan.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from facesieve.cli.main import main
from facesieve.config import Config, FoldersConfig
from facesieve.engines.local import Engine
from facesieve.errors import AlreadyHasVerdictError
from facesieve.judging.judge import Status
from facesieve.ledger.reading import Fate, fate
from facesieve.ledger.store import Ledger, LedgerRow
from facesieve.people.desk import Label, give_verdict, in_review, undo
from facesieve.testing import NoModels

from .test_restore import MTIME_NS, cli, judged, setup


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def rows_by_id(ledger_path: Path) -> dict[int, LedgerRow]:
    with Ledger(ledger_path) as ledger:
        return {row.id: row for row in ledger.rows()}


def test_approve_puts_the_file_back_and_a_scan_leaves_it_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders, ledger = setup(tmp_path)
    unsure = judged(ledger, folders, "a/unsure.jpg", "review")
    other = judged(ledger, folders, "other.jpg", "review")
    ledger.close()
    assert unsure.destination is not None

    code, results = cli(
        capsys, "approve", str(folders.root), "--id", str(unsure.id), "--who", "ana", "--json"
    )

    assert code == 0
    assert [(r["result"], r["id"], r["label"], r["to"]) for r in results] == [
        ("settled", unsure.id, "keep", unsure.path)
    ]
    back = Path(unsure.path)
    assert back.read_bytes() == b"bytes of a/unsure.jpg"
    assert back.stat().st_mtime_ns == MTIME_NS
    assert not Path(unsure.destination).exists()
    rows = rows_by_id(folders.ledger)
    human = rows[results[0]["verdict_id"]]
    assert (human.who, human.label, human.verdict, human.action, human.state) == (
        "ana",
        "keep",
        "keep",
        "keep",
        "done",
    )
    assert (human.ref, human.path, human.destination) == (unsure.id, unsure.path, unsure.path)
    assert human.policy_fingerprint is not None and human.models_fingerprint is not None
    assert rows[unsure.id].settled_by == human.id
    assert fate(rows[unsure.id], None) == (Fate.SETTLED, None)
    with Ledger(folders.ledger) as ledger:
        assert [d.id for d in in_review(ledger)] == [other.id]
        engine = Engine(Config(), NoModels(), folders=folders, ledger=ledger)
        assert engine.process(back).status is Status.KNOWN

    # Settled once: a second decision about the same file is refused, and changes nothing.
    code, results = cli(capsys, "reject", str(folders.root), "--id", str(unsure.id), "--json")
    assert code == 1 and results[0]["result"] == "refused"
    assert back.exists() and rows_by_id(folders.ledger) == rows


def test_reject_by_path_quarantines_and_no_face_is_its_own_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders, ledger = setup(tmp_path)
    first = judged(ledger, folders, "first.jpg", "review")
    cat = judged(ledger, folders, "cat.jpg", "review")
    ledger.close()
    assert first.destination is not None and cat.destination is not None

    code, results = cli(capsys, "reject", str(folders.root), "--path", first.destination, "--json")
    assert code == 0
    assert results[0]["to"] == str(folders.quarantine / "first.jpg")
    code, results = cli(
        capsys, "reject", str(folders.root), "--path", cat.path, "--no-face", "--json"
    )
    assert code == 0
    assert (folders.quarantine / "cat.jpg").read_bytes() == b"bytes of cat.jpg"
    labels = {(r.ref, r.label, r.verdict, r.action) for r in rows_by_id(folders.ledger).values()}
    assert (first.id, "reject", "reject", "quarantine") in labels
    assert (cat.id, "no_face", "reject", "quarantine") in labels

    # A name that is not in review is said so, not guessed at.
    code, results = cli(capsys, "approve", str(folders.root), "--path", first.path, "--json")
    assert code == 1 and results[0]["result"] == "not in review"


def test_keep_goes_to_accepted_when_set(tmp_path: Path) -> None:
    folders, ledger = setup(tmp_path)
    accepted = tmp_path / "accepted"
    config = Config(folders=FoldersConfig(accepted=accepted))
    unsure = judged(ledger, folders, "x/unsure.png", "review")
    done = give_verdict(ledger, config, unsure.id, Label.KEEP, "ana")
    assert done.where == accepted / "x" / "unsure.png"
    assert done.where.read_bytes() == b"bytes of x/unsure.png"
    assert not Path(unsure.path).exists()
    ledger.close()


def test_undo_returns_the_file_to_review_and_it_can_be_decided_again(tmp_path: Path) -> None:
    folders, ledger = setup(tmp_path)
    unsure = judged(ledger, folders, "unsure.jpg", "review")
    assert unsure.destination is not None
    done = give_verdict(ledger, Config(), unsure.id, Label.REJECT, "ana")
    assert done.where == folders.quarantine / "unsure.jpg"

    undone = undo(ledger, done.verdict_id, "bo")

    assert undone.where == Path(unsure.destination)
    assert Path(unsure.destination).read_bytes() == b"bytes of unsure.jpg"
    assert not (folders.quarantine / "unsure.jpg").exists()
    rows = {row.id: row for row in ledger.rows()}
    assert rows[unsure.id].settled_by is None
    (undo_row,) = [r for r in rows.values() if r.action == "undo"]
    assert (undo_row.ref, undo_row.who, undo_row.state) == (done.verdict_id, "bo", "done")
    assert rows[done.verdict_id].undone_by == undo_row.id
    assert ledger.human_verdicts() == []
    assert [d.id for d in in_review(ledger)] == [unsure.id]
    with pytest.raises(AlreadyHasVerdictError):
        undo(ledger, done.verdict_id, "bo")  # once only

    again = give_verdict(ledger, Config(), unsure.id, Label.KEEP, "ana")
    assert Path(unsure.path).exists() and again.verdict_id != done.verdict_id
    assert [h.label for h in ledger.human_verdicts()] == ["keep"]
    ledger.close()


def test_a_deletion_is_never_undone(tmp_path: Path) -> None:
    folders, ledger = setup(tmp_path)
    config = Config.model_validate({"actions": {"reject": "delete"}})
    unsure = judged(ledger, folders, "unsure.jpg", "review")
    done = give_verdict(ledger, config, unsure.id, Label.NO_FACE, "ana")
    assert done.where is None and done.action == "delete"
    assert unsure.destination is not None and not Path(unsure.destination).exists()
    with pytest.raises(AlreadyHasVerdictError, match="cannot be undone"):
        undo(ledger, done.verdict_id, "ana")
    ledger.close()


def test_two_deciders_at_once_act_on_the_file_once(tmp_path: Path) -> None:
    folders, ledger = setup(tmp_path)
    files = [judged(ledger, folders, f"f{i}.jpg", "review") for i in range(12)]
    ledger.close()
    outcomes: dict[str, list[str]] = {"keep": [], "reject": []}
    start = threading.Barrier(2)

    def decide(label: Label) -> None:
        with Ledger(folders.ledger) as own:  # one connection each, as two processes have
            start.wait()
            for row in files:
                try:
                    give_verdict(own, Config(), row.id, label, label.value)
                except AlreadyHasVerdictError:
                    outcomes[label.value].append("refused")
                else:
                    outcomes[label.value].append("settled")

    threads = [
        threading.Thread(target=decide, args=(label,)) for label in (Label.KEEP, Label.REJECT)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes["keep"] + outcomes["reject"]) == ["refused"] * 12 + ["settled"] * 12
    rows = rows_by_id(folders.ledger)
    humans = [r for r in rows.values() if r.who is not None and r.state == "done"]
    assert sorted(r.ref for r in humans) == sorted(f.id for f in files)  # one each
    for row in files:
        (human,) = [h for h in humans if h.ref == row.id]
        in_place = Path(row.path).exists()
        quarantined = (folders.quarantine / Path(row.path).name).exists()
        assert (in_place, quarantined) == (human.label == "keep", human.label == "reject")
    assert not any(folders.review.iterdir())


def test_a_policy_change_never_rejudges_what_a_person_settled(tmp_path: Path) -> None:
    from facesieve.people.rejudge import stale_decisions

    folders, ledger = setup(tmp_path)
    settled = judged(ledger, folders, "settled.jpg", "review")
    waiting = judged(ledger, folders, "waiting.jpg", "review")
    kept = judged(ledger, folders, "kept.jpg", "keep")
    give_verdict(ledger, Config(), settled.id, Label.KEEP, "ana")
    models = {"detector": "none", "gender": "none"}  # what test_restore.judged records

    stale = stale_decisions(ledger, Config(), models, folders.root)
    assert ([d.id for d in stale.kept], [d.id for d in stale.moved]) == ([kept.id], [waiting.id])
    ledger.close()


def test_the_report_shows_human_verdicts_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .test_report import items_of

    folders, ledger = setup(tmp_path)
    kept = judged(ledger, folders, "kept.jpg", "review")
    rejected = judged(ledger, folders, "rejected.jpg", "review")
    waiting = judged(ledger, folders, "waiting.jpg", "review")
    approved = give_verdict(ledger, Config(), kept.id, Label.KEEP, "ana")
    refused = give_verdict(ledger, Config(), rejected.id, Label.NO_FACE, "bo")
    ledger.close()
    page = tmp_path / "report.html"

    code, _ = cli(
        capsys, "report", str(folders.root), "--html", str(page), "--review-url", "http://x/"
    )

    assert code == 0
    html = page.read_text()
    main_list, people = html.split('<section id="people">')
    machine = {i["id"]: i["data-fate"] for i in items_of(main_list)}
    assert machine == {
        f"d{kept.id}": "settled by a person",
        f"d{rejected.id}": "settled by a person",
        f"d{waiting.id}": "in review",
    }
    humans = {i["id"]: (i["data-label"], i["data-fate"]) for i in items_of(people)}
    assert humans == {
        f"d{approved.verdict_id}": ("keep", "left in place"),
        f"d{refused.verdict_id}": ("no_face", "quarantined"),
    }
    assert 'href="http://x/#id=' + str(waiting.id) + '"' in main_list
    assert "ana settled it" in people and "bo settled it" in people

    # stats: the model's three decisions, and people's two verdicts apart.
    assert main(["stats", str(folders.root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["decisions"] == 3 and stats["verdicts"]["review"] == 3
    assert stats["settled_by_people"] == {"keep": 1, "reject": 0, "no_face": 1}
