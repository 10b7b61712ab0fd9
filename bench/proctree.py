"""The memory of a process and all its descendants, as the benches measure it.

    python bench/proctree.py PID

Summing RSS over a process tree counts every shared page (the Python interpreter, the
model libraries, pages a forked child still shares with its parent) once per process
that maps it, so a tree of N similar processes looks up to N times its real size. The
benches therefore sum PSS (proportional set size, from /proc/PID/smaps_rollup): a page
shared by k processes counts 1/k in each, so the sum over the tree is the memory the
tree really holds (a page shared with a process outside the tree is counted only in
part). USS (the pages private to each process) is printed beside it as the floor: what
ending the whole tree would give back. RSS is printed only to show the difference.
Linux only (smaps_rollup, kernel >= 4.14).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Memory:
    """Bytes held by a set of processes, counted three ways."""

    pss: int = 0
    uss: int = 0
    rss: int = 0
    processes: int = 0

    def __add__(self, other: Memory) -> Memory:
        return Memory(
            self.pss + other.pss,
            self.uss + other.uss,
            self.rss + other.rss,
            self.processes + other.processes,
        )


def descendants(root: int) -> list[int]:
    """`root` and every live process below it, from /proc/*/stat's parent field."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def process_memory(pid: int) -> Memory:
    """One process's PSS, USS and RSS; zero if it has ended."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except (OSError, ValueError):
        return Memory()
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return Memory(fields.get("Pss", 0), uss, fields.get("Rss", 0), 1)


def tree_memory(root: int) -> Memory:
    """The sum over `root` and its descendants (PSS sums correctly; RSS does not)."""
    total = Memory()
    for pid in descendants(root):
        total = total + process_memory(pid)
    return total


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    root = int(sys.argv[1])
    for pid in descendants(root):
        memory = process_memory(pid)
        print(
            f"pid {pid}: PSS {memory.pss / 2**20:.0f} MiB, USS {memory.uss / 2**20:.0f} MiB, "
            f"RSS {memory.rss / 2**20:.0f} MiB"
        )
    total = tree_memory(root)
    print(
        f"tree of {total.processes}: PSS {total.pss / 2**20:.0f} MiB, "
        f"USS {total.uss / 2**20:.0f} MiB, RSS summed {total.rss / 2**20:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
