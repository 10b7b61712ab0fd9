"""What `facesieve scan --require face` does to the datasets the real scrapers write.

    python bench/scrapers.py [--faces 45 --nofaces 15] [--hook-files 20]
                             [--no-watch] [--keep DIR]

The clients (img2dataset 1.47, gallery-dl 1.32, Scrapy 2.19) run from their own venv
(tests/scrapers-requirements.txt; scripts/scrapers-venv builds it, FACESIEVE_SCRAPERS_VENV
points elsewhere) against photos served from a loopback http.server on 127.0.0.1 (face
photos from ../shared/data/fairface, no-face photos from ../shared/data/noface, interleaved),
each into a temporary folder; then the real CLI, real models, scans that folder. One row per
client and mode (issue 17's table: img2dataset files; the same command again on what the
scan left, its resume; with [actions] not_image = "keep"; img2dataset writing into the inbox
of `facesieve watch`, and again with its _tmp/ in [watch] exclude; gallery-dl with metadata;
gallery-dl's exec hook; Scrapy's ImagesPipeline with and without thumbnails), columns:
  - images written by the client; kept: still in place after facesieve;
  - sidecars of kept images: of the files that belong to an image facesieve kept (KEY.json,
    KEY.txt, NAME.jpg.json), those still beside it;
  - thumbs of kept images: the same for Scrapy's thumbs/<size>/<sha1>.jpg of full/<sha1>.jpg;
  - orphans: sidecars and thumbs left without their image;
  - index: the dataset's own index files (SHARD.parquet, SHARD_stats.json, info.json) in place;
  - GETs: image bodies the server sent during the row's client run (a resume downloads none);
  - s/file: gallery-dl's exec hook `facesieve check {}`, its cost per hooked file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.scrapers_util import (  # noqa: E402
    ClientFailedError,
    ImageServer,
    Inventory,
    inventory,
    owner_of,
    pick_photos,
    run_gallery_dl,
    run_img2dataset,
    run_scrapy,
    serve_images,
)


@dataclass
class Row:
    mode: str
    written: int = 0
    kept: int = 0
    sidecars: tuple[int, int] = (0, 0)
    thumbs: tuple[int, int] = (0, 0)
    orphans: int = 0
    index: tuple[int, int] = (0, 0)
    gets: int = 0
    per_hook: float | None = None
    note: str = ""


def facesieve(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "daemon"), env.get("PYTHONPATH")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "facesieve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def scan(folder: Path, config: Path | None = None) -> None:
    args = ["scan", "--require", "face", "--workers", "1", "--log-level", "warning"]
    if config is not None:
        args += ["--config", str(config)]
    result = facesieve(*args, str(folder))
    # 0: all kept; 1: something not kept. Anything else is the scan failing, not a figure.
    if result.returncode not in (0, 1):
        raise SystemExit(f"facesieve scan {folder} exited {result.returncode}:\n{result.stderr}")


def kept_members(before: Inventory, after: Inventory, members: str) -> tuple[int, int]:
    """(still beside it, all) of the sidecars or thumbs of the images facesieve kept."""
    images_before, images_after = set(before.images), set(after.images)
    in_place = set(getattr(after, members))
    beside = of_kept = 0
    for member in getattr(before, members):
        owner = next(
            (str(o) for o in owner_of(PurePosixPath(member)) if str(o) in images_before), None
        )
        if owner is not None and owner in images_after:
            of_kept += 1
            beside += member in in_place
    return beside, of_kept


def thumbs_by_size(before: Inventory, after: Inventory) -> str:
    """Per thumbnail size, how many of those written are still in place."""
    in_place = set(after.thumbs) | set(after.orphans)
    sizes = sorted({PurePosixPath(t).parts[-2] for t in before.thumbs})
    counts = []
    for size in sizes:
        written = [t for t in before.thumbs if PurePosixPath(t).parts[-2] == size]
        counts.append(f"{size} {sum(t in in_place for t in written)}/{len(written)}")
    return "thumbs in place by size: " + ", ".join(counts) if counts else ""


def compare(mode: str, before: Inventory, after: Inventory, gets: int, note: str = "") -> Row:
    index_in_place = [f for f in before.index_files if f in after.index_files]
    note = "; ".join(part for part in (note, thumbs_by_size(before, after)) if part)
    return Row(
        mode=mode,
        written=len(before.images),
        kept=len(after.images),
        sidecars=kept_members(before, after, "sidecars"),
        thumbs=kept_members(before, after, "thumbs"),
        orphans=len(after.orphans),
        index=(len(index_in_place), len(before.index_files)),
        gets=gets,
        note=note,
    )


def client_then_scan(
    mode: str,
    server: ImageServer,
    work: Path,
    client: Callable[[ImageServer, Path, Path], float],
    config: Path | None = None,
) -> tuple[Row, Inventory, Path]:
    output = work / "out"
    gets = server.image_gets()
    client(server, output, work / "client")
    gets = server.image_gets() - gets
    before = inventory(output)
    scan(output, config)
    return compare(mode, before, inventory(output), gets), before, output


def img2dataset_rerun(server: ImageServer, output: Path, work: Path, first: Inventory) -> Row:
    """img2dataset again on the output the scan left (its incremental resume), measured
    against what its first run wrote (`first`)."""
    before = inventory(output)
    gets = server.image_gets()
    run_img2dataset(server, output, work)
    gets = server.image_gets() - gets
    row = compare("img2dataset re-run after scan", first, inventory(output), gets)
    row.written = row.kept - len(before.images)
    row.note = "written = images the re-run put back beside those the scan kept"
    return row


def gallery_dl_hook(server: ImageServer, work: Path) -> Row:
    """gallery-dl's exec post-processor running `facesieve check {}` on each file, against
    the same run without the hook: the difference, per file, is what a hook costs."""
    plain = run_gallery_dl(server, work / "plain", work / "plain-client")
    codes = work / "codes.txt"
    check = " ".join(
        [sys.executable, "-m", "facesieve", "check", "--require", "face", "--log-level", "error"]
    )
    hook = f'PYTHONPATH={ROOT / "daemon"} {check} {{}} >/dev/null 2>&1; echo "$?" >> {codes}'
    gets = server.image_gets()
    hooked = run_gallery_dl(server, work / "hooked", work / "hooked-client", exec_command=hook)
    gets = server.image_gets() - gets
    files = len(server.photos)
    exits = codes.read_text().split()
    others = len(exits) - exits.count("0") - exits.count("1")
    note = f"exit 0 x{exits.count('0')}, 1 x{exits.count('1')}, other x{others}"
    found = inventory(work / "hooked")
    row = Row("gallery-dl exec hook (check per file)", written=len(found.images), gets=gets)
    row.kept = len(found.images)
    row.sidecars = (len(found.sidecars), len(found.sidecars))
    row.index = (len(found.index_files), len(found.index_files))
    row.per_hook = (hooked - plain) / files
    row.note = f"{note}; {hooked:.1f} s with, {plain:.1f} s without, {files} files"
    return row


def watch_img2dataset(server: ImageServer, work: Path, exclude_tmp: bool = False) -> Row:
    """img2dataset writing into the inbox of a running `facesieve watch`; with `exclude_tmp`,
    its work folder _tmp/ listed in [watch] exclude."""
    inbox = work / "inbox"
    inbox.mkdir(parents=True)
    config = work / "facesieve.toml"
    state = work / "state"
    exclude = f'[watch]\nexclude = ["{inbox}/_tmp"]\n' if exclude_tmp else ""
    config.write_text(
        f'[folders]\ninbox = "{inbox}"\nquarantine = "{state}/quarantine"\n'
        f'review = "{state}/review"\n[ledger]\npath = "{state}/ledger.sqlite3"\n'
        '[policy]\nrequire = "face"\n[logging]\nformat = "json"\n' + exclude
    )
    log = work / "watch.jsonl"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "daemon"), env.get("PYTHONPATH")) if p
    )
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "facesieve", "watch", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + 300
            while b'"ready"' not in log.read_bytes():
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"facesieve watch did not get ready:\n{log.read_text()}")
                time.sleep(0.2)
            gets = server.image_gets()
            note = "img2dataset exit 0"
            try:
                run_img2dataset(server, inbox, work / "client")
            except ClientFailedError as error:
                note = str(error).splitlines()[0]
            gets = server.image_gets() - gets
            # Let the daemon settle what img2dataset left (settle_seconds 2 + judging).
            quiet_until = time.monotonic() + 15
            size = -1
            while time.monotonic() < quiet_until:
                now = log.stat().st_size
                if now != size:
                    size, quiet_until = now, max(quiet_until, time.monotonic() + 6)
                time.sleep(0.5)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    after = inventory(inbox)
    # The shards' _stats.json may lie in quarantine by now: count them wherever they are.
    written = _stats_successes(inbox) + _stats_successes(state / "quarantine")
    mode = "img2dataset into a watched inbox" + (", _tmp excluded" if exclude_tmp else "")
    row = Row(mode, gets=gets, note=note)
    row.written = written
    row.kept = len(after.images)
    # img2dataset writes KEY.json and KEY.txt beside each KEY.jpg.
    row.sidecars = (len(after.sidecars), 2 * len(after.images))
    row.orphans = len(after.orphans)
    shards = -(-len(server.photos) // 20)
    row.index = (len(after.index_files), 2 * shards)
    quarantined = len(list((state / "quarantine").rglob("*.feather")))
    failed = set(
        re.findall(r"shard (\d+) failed", (work / "client" / "img2dataset.log").read_text())
    )
    row.note += (
        f"; shards failed: {len(failed)} of {shards}; _tmp/*.feather quarantined: {quarantined};"
        " written = successes in the shards' _stats.json"
    )
    return row


def _stats_successes(folder: Path) -> int:
    """Images img2dataset says it wrote, from its shards' _stats.json (wherever they are now)."""
    total = 0
    for stats in folder.rglob("*_stats.json"):
        total += int(json.loads(stats.read_text()).get("successes", 0))
    return total


def print_table(rows: list[Row]) -> None:
    head = [
        "client / mode",
        "images written",
        "kept",
        "sidecars of kept images",
        "thumbs of kept images",
        "orphans",
        "index in place",
        "GETs",
        "s/hooked file",
    ]
    lines = [head]
    for r in rows:
        lines.append(
            [
                r.mode,
                str(r.written),
                str(r.kept),
                f"{r.sidecars[0]}/{r.sidecars[1]}",
                f"{r.thumbs[0]}/{r.thumbs[1]}",
                str(r.orphans),
                f"{r.index[0]}/{r.index[1]}",
                str(r.gets),
                "-" if r.per_hook is None else f"{r.per_hook:.2f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print()
    for r in rows:
        if r.note:
            print(f"{r.mode}: {r.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=45, help="face photos for img2dataset")
    parser.add_argument("--nofaces", type=int, default=15, help="no-face photos for img2dataset")
    parser.add_argument(
        "--hook-files",
        type=int,
        default=20,
        help="photos for gallery-dl and Scrapy (3 faces to 1 no-face)",
    )
    parser.add_argument("--no-watch", action="store_true", help="skip the watch row")
    parser.add_argument("--keep", type=Path, help="keep every output under this folder")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="facesieve-scrapers-")) if args.keep is None else args.keep
    base.mkdir(parents=True, exist_ok=True)
    keep_config = base / "not-image-keep.toml"
    keep_config.write_text('[actions]\nnot_image = "keep"\n')
    small_faces = args.hook_files - args.hook_files // 4
    rows: list[Row] = []
    try:
        with serve_images(pick_photos(args.faces, args.nofaces)) as server:
            row, first, output = client_then_scan(
                "img2dataset files", server, base / "i2d", run_img2dataset
            )
            rows.append(row)
            rows.append(img2dataset_rerun(server, output, base / "i2d-rerun", first))
            row, _, _ = client_then_scan(
                "img2dataset files, not_image=keep",
                server,
                base / "i2d-keep",
                run_img2dataset,
                keep_config,
            )
            rows.append(row)
            if not args.no_watch:
                rows.append(watch_img2dataset(server, base / "i2d-watch"))
                rows.append(watch_img2dataset(server, base / "i2d-watch-x", exclude_tmp=True))
        with serve_images(pick_photos(small_faces, args.hook_files - small_faces)) as server:
            row, _, _ = client_then_scan(
                "gallery-dl --write-metadata --write-info-json",
                server,
                base / "gdl",
                run_gallery_dl,
            )
            rows.append(row)
            rows.append(gallery_dl_hook(server, base / "gdl-hook"))
            row, _, _ = client_then_scan(
                "Scrapy ImagesPipeline, IMAGES_THUMBS", server, base / "scrapy", run_scrapy
            )
            rows.append(row)
            row, _, _ = client_then_scan(
                "Scrapy ImagesPipeline, no thumbs",
                server,
                base / "scrapy-plain",
                lambda s, o, w: run_scrapy(s, o, w, thumbs={}),
            )
            rows.append(row)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print_table(rows)


if __name__ == "__main__":
    main()
