"""The judge on its own: a real photo in, a plain Judgement out, and every value
and error it can produce survives pickling (a judge may run in another process)."""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from facesieve import errors
from facesieve.config import Config
from facesieve.judging.images import read_file
from facesieve.judging.judge import Judgement, NotJudged, Seen, Status, judge, judge_many
from facesieve.judging.policy import Verdict
from facesieve.ledger.store import policy_fingerprint
from facesieve.testing import Broken, NoModels

from .conftest import DATA, labelled

_EXAMPLE_ARGS: dict[type[Exception], tuple[object, ...]] = {
    errors.ConfigError: ("policy.require", "must be face, man or woman"),
    errors.ModelLoadError: ("mtcnn", "weights not present"),
    # size, limit, then the file's mtime_ns, mode, ctime_ns, dev and ino
    errors.FileTooLargeError: (300, 200, 17, 0o100644, 18, 2049, 77),
}


def test_every_error_pickles_with_its_fields() -> None:
    kinds = [
        kind
        for _, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, errors.FacesieveError)
    ]
    assert len(kinds) >= 8
    for kind in kinds:
        error = kind(*_EXAMPLE_ARGS.get(kind, ("it went wrong",)))
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is kind
        assert str(back) == str(error)
        assert vars(back) == vars(error)
        assert errors.exit_code(back) == errors.exit_code(error)


def test_exit_codes_come_from_one_table() -> None:
    assert errors.exit_code(errors.ConfigError("k", "m")) is errors.ExitCode.CONFIG
    assert errors.exit_code(errors.ModelLoadError("m", "x")) is errors.ExitCode.MODEL
    assert errors.exit_code(errors.LedgerError("x")) is errors.ExitCode.LEDGER
    assert errors.exit_code(errors.ActionError("x")) is errors.ExitCode.FAILURE
    assert errors.exit_code(RuntimeError("x")) is errors.ExitCode.FAILURE
    assert errors.exit_message(errors.LedgerError("locked")) == "facesieve: ledger error: locked"


@pytest.mark.data
def test_a_real_photo_is_judged_into_a_plain_picklable_judgement(
    tmp_path: Path, analyzer: Any
) -> None:
    labelled("fairface")
    photo = tmp_path / "inbox" / "photo.jpg"
    photo.parent.mkdir()
    shutil.copy2(DATA / "fairface" / "fairface_0001.jpg", photo)
    config = Config()
    info = os.stat(photo)

    result = judge(photo, analyzer, config.policy, config.images)

    assert isinstance(result, Judgement)
    assert result.path == photo and result.path.is_absolute()
    assert os.fsencode(result.path) == os.fsencode(photo)
    assert result.sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert (result.size, result.mtime_ns, result.ctime_ns) == (
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
    )
    assert (result.dev, result.ino, result.mode) == (info.st_dev, info.st_ino, info.st_mode)
    assert result.verdict is Verdict.KEEP and len(result.faces) >= 1
    assert result.models == analyzer.describe()
    assert result.models["detector"] == config.models.detector
    assert result.policy_fingerprint == policy_fingerprint(config.policy.model_dump())
    assert result.model_ms > 0 and result.read_ms > 0
    assert pickle.loads(pickle.dumps(result)) == result

    # Bytes already read (another process's read, say) give the same judgement.
    again = judge(read_file(photo, max_bytes=10**8), analyzer, config.policy, config.images)
    assert isinstance(again, Judgement)
    assert (again.sha256, again.ino, again.verdict, again.faces) == (
        result.sha256,
        result.ino,
        result.verdict,
        result.faces,
    )
    # A stricter policy is another fingerprint: the review desk can tell them apart.
    stricter = config.with_policy(require="woman").policy
    assert policy_fingerprint(stricter.model_dump()) != result.policy_fingerprint

    # Recorded before, unchanged since: known, without a model call.
    # Only the same inode with the same ctime skips the read (size and mtime anyone
    # who can write the file can forge); without them the bytes are compared.
    seen = Seen(
        result.size,
        result.mtime_ns,
        result.sha256,
        "ledger #1",
        dev=result.dev,
        ino=result.ino,
        ctime_ns=result.ctime_ns,
    )
    known = judge(photo, analyzer, config.policy, config.images, seen=seen)
    assert known == NotJudged(photo, Status.KNOWN, "already decided (ledger #1)")
    legacy = Seen(result.size, result.mtime_ns, result.sha256, "ledger #1")
    known = judge(photo, analyzer, config.policy, config.images, seen=legacy)
    assert known == NotJudged(photo, Status.KNOWN, "content unchanged (ledger #1)")


def test_problems_that_are_not_verdicts_are_plain_values(tmp_path: Path) -> None:
    config = Config()
    (tmp_path / "target.jpg").write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "target.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    sources = [tmp_path / "link.jpg", tmp_path / "pipe.jpg", tmp_path / "gone.jpg"]
    results = list(judge_many(sources, NoModels(), config.policy, config.images))
    assert results == [
        NotJudged(tmp_path / "link.jpg", Status.SKIPPED, "symlink: never followed"),
        NotJudged(tmp_path / "pipe.jpg", Status.SKIPPED, "not a regular file"),
        NotJudged(tmp_path / "gone.jpg", Status.SKIPPED, "vanished before it was judged"),
    ]
    assert [pickle.loads(pickle.dumps(r)) for r in results] == results


def test_a_model_error_is_not_a_verdict(tmp_path: Path) -> None:
    from PIL import Image

    config = Config()
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    result = judge(tmp_path / "a.png", Broken("weights corrupt"), config.policy, config.images)
    assert result == NotJudged(
        tmp_path / "a.png", Status.ERROR, "model error: RuntimeError: weights corrupt"
    )
