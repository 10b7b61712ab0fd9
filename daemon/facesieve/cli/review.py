"""`facesieve review`: serve the review page until stopped (`people.page`)."""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
import threading
from types import FrameType

from ..config import Config, review_folders, split_address
from ..errors import ExitCode
from ..ledger.shards import LedgerUnion
from ..logs import get_logger
from ..people.desk import default_who, in_review, recover_pending_moves
from ..people.page import create_app, url_of
from .arguments import add_folder_argument, add_who_argument

__all__ = ["configure", "run"]


_TICK = 0.25


def configure(parser: argparse.ArgumentParser) -> None:
    add_folder_argument(parser)
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="where to serve the page (default: review.address, 127.0.0.1:8750; port 0: any)",
    )
    add_who_argument(parser)


class _Stop:
    def __init__(self) -> None:
        self.event = threading.Event()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()


def run(args: argparse.Namespace, config: Config) -> int:
    from werkzeug.serving import make_server

    config = config.with_review(address=args.address)
    folders = review_folders(config, args.folder)
    who = args.who or config.review.who or default_who()
    with LedgerUnion.open_existing(folders.ledger) as ledger:
        recover_pending_moves(ledger, folders, config.actions.mode)
        waiting = len(in_review(ledger))
    token = secrets.token_urlsafe(32)
    host, port = split_address(config.review.address, any_port=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    try:
        server = make_server(host, port, create_app(config, folders, token, who), threaded=True)
    except OSError as error:
        print(f"facesieve: cannot serve on {config.review.address}: {error}", file=sys.stderr)
        return ExitCode.FAILURE
    url = url_of(host, server.server_port, token)
    print(url, flush=True)
    print(
        f"facesieve: review page for {folders.ledger} ({waiting} files in review, deciding as "
        f"{who}); keys: k keep, r reject, n no human face, u undo. Ctrl-C stops.",
        file=sys.stderr,
        flush=True,
    )
    get_logger().info("review_serving", address=f"{host}:{server.server_port}", who=who)
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, name="facesieve-review", daemon=True)
    thread.start()
    try:
        while not stop.event.wait(_TICK):
            if not thread.is_alive():
                return ExitCode.FAILURE
    finally:
        server.shutdown()
        thread.join(10.0)
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    get_logger().info("review_stopped")
    return ExitCode.OK
