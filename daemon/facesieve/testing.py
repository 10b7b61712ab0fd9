"""Stand-in models for tests of what surrounds the models, as `structlog.testing` and
httpx's `MockTransport` ship theirs.

Each one honours the analyzer's interface (`judging.analyzer.FaceModel`), so it can be
handed wherever facesieve takes its models: `Engine(config, NoFaces())`,
`Guard(config, make_analyzer=lambda c: ColourModel())`, `judge(path, Broken(), ...)`.
They load nothing and import no model package. They are for plumbing only (queues,
crashes, moves, signals, the ledger); whatever depends on faces needs the real models.
Like the real analyzer, none of them is meant to be shared between threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .config import PolicyConfig
from .judging.images import DecodedImage
from .judging.policy import Face

__all__ = [
    "Broken",
    "ColourModel",
    "HangsOnce",
    "ModelCalledError",
    "NoFaces",
    "NoModels",
    "SlowNoFaces",
    "Unsure",
]


class ModelCalledError(AssertionError):
    """A stand-in that must never run a model was asked to (`NoModels`).

    An AssertionError: it marks a broken test expectation, not a model failure, though
    the judge still reports it as a model error (never a verdict) if it catches it.
    """


class NoFaces:
    """Finds no face anywhere: under every policy, every decodable image is rejected."""

    detector = "none"

    def describe(self) -> dict[str, str]:
        return {"detector": self.detector, "gender": "none"}

    def analyze_many(
        self, images: Sequence[DecodedImage], policy: PolicyConfig | None = None
    ) -> list[list[Face]]:
        return [[] for _ in images]

    def use_gender(self, wanted: bool) -> None:
        """A reloaded policy may want genders; there are no faces to give one to."""


class NoModels(NoFaces):
    """For code that must never run a model (restore, recovery, unreadable files):
    any model call raises `ModelCalledError`."""

    def analyze_many(
        self, images: Sequence[DecodedImage], policy: PolicyConfig | None = None
    ) -> list[list[Face]]:
        raise ModelCalledError(f"a model was asked to judge {len(images)} image(s)")


class Unsure(NoFaces):
    """One face filling the image, its confidence halfway between the policy's floor and
    its sure threshold: every image's verdict hangs on a possible face, so it goes to
    review."""

    detector = "unsure"

    def analyze_many(
        self, images: Sequence[DecodedImage], policy: PolicyConfig | None = None
    ) -> list[list[Face]]:
        if policy is None:
            raise ModelCalledError("Unsure needs the policy its thresholds come from")
        middle = (policy.min_face_confidence + policy.sure_face_confidence) / 2
        return [[Face((0, 0, image.width, image.height), middle)] for image in images]


class ColourModel(NoFaces):
    """A mostly green image shows one sure face, covering it; any other image none.

    For tests about files rather than faces: a green upload is kept, any other colour
    rejected, and images of one colour and size have the same bytes (as BMP).
    """

    detector = "colour"

    def analyze(self, image: DecodedImage, policy: PolicyConfig | None = None) -> list[Face]:
        red, green, blue = (float(image.rgb[..., i].mean()) for i in range(3))
        if green > 2 * max(red, blue, 1.0):
            return [Face((0, 0, image.width, image.height), 0.99)]
        return []

    def analyze_many(
        self, images: Sequence[DecodedImage], policy: PolicyConfig | None = None
    ) -> list[list[Face]]:
        return [self.analyze(image, policy) for image in images]


class SlowNoFaces(NoFaces):
    """`NoFaces` taking `seconds` per model call, as a real model on a busy CPU would."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def analyze_many(
        self, images: Sequence[DecodedImage], policy: PolicyConfig | None = None
    ) -> list[list[Face]]:
        time.sleep(self.seconds)  # the cost being imitated, not a synchronisation
        return super().analyze_many(images, policy)


class HangsOnce(NoFaces):
    """Blocks inside model calls until `release` is set, as a hung model call would.

    `entered` is set as the first call begins, and `entered_file` (for a test in
    another process) is created then. A call returns (as `NoFaces`) once released,
    or after `timeout` seconds so that a failing test cannot hang for ever.
    """

    def __init__(self, timeout: float = 30.0, *, entered_file: Path | None = None) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._timeout = timeout
        self._entered_file = entered_file

    def analyze_many(
        self, images: Sequence[DecodedImage], policy: PolicyConfig | None = None
    ) -> list[list[Face]]:
        self.entered.set()
        if self._entered_file is not None:
            self._entered_file.touch()
        self.release.wait(self._timeout)
        return super().analyze_many(images, policy)


class Broken(NoFaces):
    """Every model call fails with `RuntimeError(message)`, as corrupt weights would."""

    def __init__(self, message: str = "weights corrupt") -> None:
        self.message = message

    def analyze_many(
        self, images: Sequence[DecodedImage], policy: PolicyConfig | None = None
    ) -> list[list[Face]]:
        raise RuntimeError(self.message)
