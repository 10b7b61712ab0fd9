"""`facesieve watch [DIR]`: guard a folder until stopped (the daemon, `daemon.guard`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config

__all__ = ["command_line_overrides", "configure", "run"]


def configure(watch: argparse.ArgumentParser) -> None:
    watch.add_argument(
        "folder",
        type=Path,
        nargs="?",
        metavar="DIR",
        help="the inbox (default: folders.inbox from the config)",
    )
    watch.add_argument("--config", type=Path, metavar="FILE")
    watch.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    watch.add_argument(
        "--dry-run",
        action="store_true",
        help="judge and log every arrival; record nothing, move nothing",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    from ..daemon.guard import Guard

    overrides = command_line_overrides(args)
    return Guard(config, config_path=args.config, dry_run=args.dry_run, overrides=overrides).run()


def command_line_overrides(args: argparse.Namespace) -> Callable[[Config], Config]:
    """What `watch DIR` and `--log-level` set over the config file, at start and on SIGHUP."""
    inbox = None if args.folder is None else args.folder.resolve()

    def override(config: Config) -> Config:
        update: dict[str, Any] = {}
        if inbox is not None:
            update["folders"] = config.folders.model_copy(update={"inbox": inbox})
        if args.log_level is not None:
            update["logging"] = config.logging.model_copy(update={"level": args.log_level})
        return config.model_copy(update=update)

    return override
