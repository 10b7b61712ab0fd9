"""`facesieve approve`: keep files in review (to folders.accepted, or back where they were)."""

from __future__ import annotations

import argparse

from ..config import Config
from ..people.desk import Label
from . import verdicts

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    verdicts.configure(parser, reject=False)


def run(args: argparse.Namespace, config: Config) -> int:
    return verdicts.run(args, config, Label.KEEP)
