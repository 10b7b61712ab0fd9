"""`facesieve reject`: reject files in review (quarantine or delete, as actions.reject)."""

from __future__ import annotations

import argparse

from ..config import Config
from ..people.desk import Label
from . import verdicts

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    verdicts.configure(parser, reject=True)


def run(args: argparse.Namespace, config: Config) -> int:
    return verdicts.run(args, config, Label.NO_FACE if args.no_face else Label.REJECT)
