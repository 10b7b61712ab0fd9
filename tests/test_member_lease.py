"""A sample's members move under the image's lease rule (acting/apply, acting/lease).

The image was leased before it moved (a file still open for writing is never acted
on), its members were not: a caption a writer still had open went with the image
half-written, or, with the quarantine on another filesystem, was copied half and
its name unlinked under the writer. Now every member is leased with the image; one
still open for writing defers the whole sample (image and members stay together,
judged again once the writer closes), never splits it.

Plumbing: a stand-in model (`NoFaces`: every image is quarantined); the verdict is
not what is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

from facesieve.config import Config
from facesieve.engines.local import Engine
from facesieve.judging.judge import Status
from facesieve.ledger.store import Ledger
from facesieve.testing import NoFaces
from tests.conftest import copy_images


def _sample(inbox: Path) -> tuple[Path, Path, Path]:
    (image,) = copy_images(inbox / "00000", {"fairface": ["fairface_0001.jpg"]})
    image = image.rename(inbox / "00000" / "000000000.jpg")
    caption = inbox / "00000" / "000000000.txt"
    caption.write_text("a capt")
    meta = inbox / "00000" / "000000000.json"
    meta.write_text(json.dumps({"key": "000000000"}))
    return image, caption, meta


def test_a_member_open_for_writing_defers_its_whole_sample(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    image, caption, meta = _sample(inbox)
    config = Config.model_validate({"inbox": {"layout": "img2dataset"}})
    folders = config.resolve_folders(inbox)
    ledger = Ledger(folders.ledger)
    engine = Engine(config, NoFaces(), folders=folders, ledger=ledger)
    quarantine = inbox / ".facesieve" / "quarantine" / "00000"
    try:
        with caption.open("a") as writer:  # the writer still has the caption open
            (outcome,) = engine.process_many([image])
            assert outcome.status is Status.DEFERRED, outcome
            assert "000000000.txt" in outcome.reason and "open for writing" in outcome.reason
            assert image.is_file() and caption.is_file() and meta.is_file()
            assert not quarantine.exists()
            assert [r.state for r in ledger.rows()] == []  # no decision begun
            writer.write("ion")
        (outcome,) = engine.process_many([image])  # closed: the sample goes whole
    finally:
        engine.close()
        ledger.close()
    assert outcome.action == "quarantine", outcome
    assert sorted(p.name for p in quarantine.iterdir()) == [
        "000000000.jpg",
        "000000000.json",
        "000000000.txt",
    ]
    assert (quarantine / "000000000.txt").read_text() == "a caption"
    assert not image.exists() and not caption.exists() and not meta.exists()
