"""Human verdicts are labels: `approve`/`reject` on a real scan, then `eval --ledger` counts them.

The "person" here is FairFace's own label (male: approve, female: reject), so the
test knows every answer; its own count of where the model leaned is set against
what `eval --ledger` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from facesieve.config import ResolvedFolders
from facesieve.ledger.store import Ledger
from facesieve.people.desk import in_review

from .cli_util import run_cli
from .conftest import DATA, is_adult, labelled
from .review_util import scan_for_review

pytestmark = [pytest.mark.models, pytest.mark.data, pytest.mark.slow]


def test_approve_reject_round_trip_and_eval_ledger_counts(tmp_path: Path, analyzer: Any) -> None:
    rows = [r for r in labelled("fairface") if is_adult("fairface", r)][:40]
    gender = {r["file"]: r["gender"] for r in rows}
    folders: ResolvedFolders = scan_for_review(
        tmp_path / "inbox", [DATA / "fairface" / r["file"] for r in rows], analyzer
    )
    with Ledger(folders.ledger) as ledger:
        waiting = in_review(ledger)
    assert len(waiting) >= 6
    men = [d for d in waiting if gender[Path(d.path).name] == "male"]
    women = [d for d in waiting if gender[Path(d.path).name] == "female"]
    assert men and women

    def ids(decisions: list[Any]) -> list[str]:
        return [arg for d in decisions for arg in ("--id", str(d.id))]

    approved = run_cli("approve", str(folders.root), *ids(men), "--who", "ana", "--json")
    assert approved.code == 0, approved.stderr[-2000:]
    # Women named by their path in review, as a script would.
    by_path = [arg for d in women for arg in ("--path", str(d.destination))]
    rejected = run_cli("reject", str(folders.root), *by_path, "--who", "ana", "--json")
    assert rejected.code == 0, rejected.stderr[-2000:]
    assert [r["result"] for r in approved.records + rejected.records] == ["settled"] * (
        len(men) + len(women)
    )
    for decision in men:
        assert Path(decision.path).is_file()
    for decision in women:
        assert (folders.quarantine / Path(decision.path).name).is_file()
    remaining = [p for p in folders.review.rglob("*") if p.is_file()]
    assert len(remaining) == len(waiting) - len(men) - len(women)

    # A later scan judges none of the settled files again.
    rescan = run_cli("scan", str(folders.root), "--require", "man", "--json")
    assert rescan.code == 0 and rescan.records == [], rescan.stderr[-2000:]

    # The test's own count of where the model leaned: the gender of the largest face.
    def leaned_man(decision: Any) -> bool:
        largest = max(decision.faces, key=lambda f: f["box"][2] * f["box"][3])
        return bool(largest["gender"] == "man")

    right_men = sum(leaned_man(d) for d in men)
    right_women = sum(not leaned_man(d) for d in women)

    report = run_cli("eval", "--ledger", str(folders.root), "--require", "man", "--json")
    assert report.code == 0, report.stderr[-2000:]
    (result,) = report.records
    assert result["settled"] == len(men) + len(women)
    assert result["per_label"]["keep"]["settled"] == len(men)
    assert result["per_label"]["reject"]["settled"] == len(women)
    assert result["per_label"]["keep"]["model_right"] == right_men
    assert result["per_label"]["reject"]["model_right"] == right_women
    assert result["model_right"] == right_men + right_women
    assert result["per_model_verdict"] == {
        "review": {
            "settled": len(men) + len(women),
            "model_right": right_men + right_women,
            "accuracy": round((right_men + right_women) / (len(men) + len(women)), 4),
        }
    }
    assert result["by_person"] == {"ana": len(men) + len(women)}

    text = run_cli("eval", "--ledger", str(folders.root), "--require", "man")
    assert text.code == 0, text.stderr[-2000:]

    # The same verdicts teach the deployment its own gender head, active only on --activate.
    config = tmp_path / "facesieve.toml"
    # The policy the files were decided under (scan_for_review's; --require man): the
    # ledger keeps its fingerprint, and learn labels each verdict by it.
    config.write_text(
        '[models]\ngender_head = "own-head.json"\n[policy]\nmin_gender_confidence = 0.97\n'
    )
    args = ("learn", "--ledger", str(folders.root), "--require", "man", "--folds", "2")
    learnt = run_cli(*args, "--config", str(config), "--json", timeout=1200)
    assert learnt.code == 0, learnt.stderr[-3000:]
    (described,) = learnt.records
    assert (described["head"]["men"], described["head"]["women"]) == (len(men), len(women))
    assert "new head (2-fold CV)" in described["figures"]
    assert not (tmp_path / "own-head.json").exists()  # not without --activate
    activated = run_cli(*args, "--config", str(config), "--activate", timeout=1200)
    assert activated.code == 0, activated.stderr[-3000:]
    from facesieve.judging.gender import GenderHead

    head = GenderHead.load(tmp_path / "own-head.json")
    assert head.description["faces"] == len(men) + len(women)
    assert not list(folders.state.glob("human-verdicts-*"))  # the labelled copy is gone
