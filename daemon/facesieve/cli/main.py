"""The command line: the parser, the table of commands, and `main(argv)` (callable from tests).

Each command is a module of its own here (`cli/<command>.py`) with `configure(parser)`
and `run(args, config)`; only the module of the command being run is imported
(`check`, which a hook may run once per file, pays for no other). Errors become
exit codes through `errors.exit_code`.
"""

from __future__ import annotations

import argparse
import importlib
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import cast

from .. import __version__
from ..config import Config, load_config
from ..errors import ExitCode, FacesieveError, exit_code, exit_message
from ..logs import configure_logging
from ..paths import OUTPUT_ERRORS

__all__ = ["main"]

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace, Config], int]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; of the commands in `_COMMANDS`, only the one `argv` names gets its
    arguments (and its module imported)."""
    words = list(sys.argv[1:] if argv is None else argv)
    # The first word that is not an option is the command (the top level has no
    # option that takes a value).
    chosen = next((w for w in words if not w.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="facesieve",
        description="Keep, review or quarantine images by the faces and perceived gender in them.",
    )
    parser.add_argument("--version", action="version", version=f"facesieve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in _COMMANDS.items():
        sub = commands.add_parser(name, help=command.summary, description=command.description)
        if name == chosen:
            if command.standard_options:
                sub.add_argument("--config", type=Path, metavar="FILE", help="TOML config")
                sub.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
            command.configure()(sub)
    return parser


@dataclass(frozen=True, slots=True)
class Command:
    """A command: its help line, and its module in `cli/` (imported only to run it)."""

    summary: str
    module: str
    description: str | None = None
    # --config and --log-level, added before the command's own arguments; the
    # judging commands and the daemon add theirs themselves.
    standard_options: bool = True

    def configure(self) -> Configure:
        return cast(Configure, self._load().configure)

    def run(self) -> Run:
        return cast(Run, self._load().run)

    def _load(self) -> ModuleType:
        return importlib.import_module(f"{__package__}.{self.module}")


_COMMANDS: dict[str, Command] = {
    "check": Command(
        "judge images; change nothing",
        "check",
        description="Exit status (as ClamAV's clamdscan): 0 every image kept; 1 at least "
        "one not kept (reject, review, unreadable, not an image); 2 at least one file not "
        "judged (missing, not a regular file, an error), or bad arguments.",
        standard_options=False,
    ),
    "scan": Command(
        "judge every image under a folder once, and act", "scan", standard_options=False
    ),
    "watch": Command("guard a folder until stopped (the daemon)", "watch", standard_options=False),
    "models": Command("list the model weights the config needs", "models", standard_options=False),
    "eval": Command("measure the engine on a labelled folder (labels.csv)", "eval"),
    "learn": Command("fit the combined gender model's head from labelled folders", "learn"),
    "restore": Command("move quarantined or reviewed files back where they were", "restore"),
    "purge": Command("delete quarantined files past their retention", "purge"),
    "report": Command("write a self-contained HTML page of what was removed and why", "report"),
    "stats": Command("counts per verdict and per day, throughput, latest decisions", "stats"),
    "review": Command("serve the review page: keep or reject files in review, by key", "review"),
    "approve": Command(
        "keep files in review (to folders.accepted, or back where they were)", "approve"
    ),
    "reject": Command("reject files in review (quarantine or delete, as actions.reject)", "reject"),
}


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # Printed file names that are not UTF-8 show their bytes as \xNN.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=OUTPUT_ERRORS)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command == "check":
        from .check import prepare

        prepare(parser, args, own_argv=argv is None)
    try:
        config = load_config(args.config)
        if getattr(args, "require", None) or getattr(args, "faces", None):
            config = config.with_policy(require=args.require, faces=getattr(args, "faces", None))
        if args.command == "watch":
            from .watch import command_line_overrides

            config = command_line_overrides(args)(config)
        if args.command == "watch":
            from ..daemon.guard import daemon_logging

            daemon_logging(config.logging)  # as a reload re-applies it
        else:
            # One-shot commands keep stdout for --json.
            configure_logging(
                level=getattr(args, "log_level", None) or _default_level(args.command, config),
                format=config.logging.format,
                stream=sys.stderr,
            )
        return int(_COMMANDS[args.command].run()(args, config))
    except FacesieveError as error:
        print(exit_message(error), file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("facesieve: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


def _default_level(command: str, config: Config) -> str:
    # On a terminal, a one-shot command already prints one readable line per file;
    # the same decision as a log event would only repeat it. Off a terminal the
    # events are the machine-readable record, so they stay.
    if command != "watch" and sys.stderr.isatty() and config.logging.level == "info":
        return "warning"
    return config.logging.level
