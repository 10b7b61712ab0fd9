"""`facesieve check IMAGE...`: judge images and change nothing; the exit status tells.

A hook may run it once per file: importing this module costs no model package.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

from ..config import Config
from ..errors import ConfigError, ExitCode
from .arguments import add_common
from .output import print_outcome

__all__ = ["configure", "prepare", "run"]


# onnxruntime (1.30) parses /proc/self/cmdline at import with a recursion one
# stack frame deep per byte: past ~32 KiB of arguments (8 MiB stack) the import
# dies with SIGSEGV. A long `check` command line is therefore handed over in
# memory instead (see _reexec_check).
_LONGEST_COMMAND_LINE = 16 * 1024


def configure(check: argparse.ArgumentParser) -> None:
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
    add_common(check)


def prepare(parser: argparse.ArgumentParser, args: argparse.Namespace, *, own_argv: bool) -> None:
    """What main() checks of a `check` before the config loads (`own_argv`: the
    arguments are the process's own): refuse a check of nothing; hand a long command
    line over in memory, which re-executes this check."""
    if not args.images and args.paths_from is None:
        parser.error("check needs IMAGE arguments or --paths-from")
    if own_argv and _command_line_bytes() > _LONGEST_COMMAND_LINE:
        _reexec_check(args)


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


def run(args: argparse.Namespace, config: Config) -> ExitCode:
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
                print_outcome(outcome, as_json=args.json, with_action=False)
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
