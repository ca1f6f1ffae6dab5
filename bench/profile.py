"""Where a server's time goes under load: py-spy samples, summed per function.

`run.py --profile` records the generated API's process with py-spy (100 Hz, wall clock,
idle included: a thread blocked in fsync matters; py-spy pauses the process to sample, so
req/s under the profiler are lower) while wrk loads one operation, and prints
the hottest functions of the event-loop thread and of the busy thread-pool workers.
The raw stacks are kept next to the results (collapsed format: speedscope and
flamegraph.pl read it).

    .venv/bin/pip install py-spy      # then: .venv/bin/python bench/run.py --quick --profile
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(r":\d+\)$")
# waiting, not working: a pool worker with nothing to do (anyio's in Condition.wait, the
# API's own, api/threads.py, blocked in C under `_worker`), the loop in select (asyncio's)
# or in uvloop's C loop (its epoll wait shows as Runner.run itself; its own C work is
# small beside the Python it calls, which shows as frames above it), and a writer queuing
# for SQLite's write lock (engine/storage/database.py: its turn comes in order)
_IDLE_LEAVES = ("Condition.wait (threading.py)", "EpollSelector.select (selectors.py)",
                "Runner.run (asyncio/runners.py)", "_worker (concurrent/futures/thread.py)",
                "_GroupCommit._acquire (engine/storage/database.py)")
_PROJECT = (" (engine/", " (api/", " (bench/")
#: a frame of a thread-pool worker: anyio's (starlette's run_in_threadpool) or the API's own
_POOL_FRAMES = ("WorkerThread.run (", "_worker (concurrent/futures/thread.py)")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds`; wait on the returned process."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    return subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100",
         "--idle", "--format", "raw", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class HotSpots:
    loop_samples: int = 0
    worker_samples: int = 0
    loop_idle: int = 0
    loop: Counter[str] = field(default_factory=Counter)        # inclusive, event-loop thread
    loop_self: Counter[str] = field(default_factory=Counter)   # self, event-loop thread
    workers: Counter[str] = field(default_factory=Counter)     # inclusive, busy workers
    workers_self: Counter[str] = field(default_factory=Counter)

    def lines(self, top: int = 8) -> list[str]:
        out = []
        if self.loop_samples:
            out.append(f"event loop: {self.loop_samples} samples, "
                       f"{100 * self.loop_idle / self.loop_samples:.0f}% waiting (in select, "
                       "or in uvloop's C loop); shares below are of all its samples")
            out += _table("  self", self.loop_self, self.loop_samples, top)
            out += _table("  inside", _project(self.loop), self.loop_samples, top)
        if self.worker_samples:
            out.append(f"thread pool (busy samples only): {self.worker_samples}")
            out += _table("  self", self.workers_self, self.worker_samples, top)
            out += _table("  inside", _project(self.workers), self.worker_samples, top)
        return out


def hot_spots(path: Path) -> HotSpots:
    spots = HotSpots()
    for line in path.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        n = int(count)
        leaf = frames[-1]
        is_loop = "runpy" in frames[0]
        if not is_loop and (leaf in _IDLE_LEAVES or not any(f.startswith(_POOL_FRAMES)
                                                            for f in frames)):
            continue  # an idle pool worker, or a thread that is not the pool's
        if is_loop:
            spots.loop_samples += n
            if leaf in _IDLE_LEAVES:
                spots.loop_idle += n
                continue
            inclusive, own = spots.loop, spots.loop_self
        else:
            spots.worker_samples += n
            inclusive, own = spots.workers, spots.workers_self
        for frame in set(frames):
            inclusive[frame] += n
        own[leaf] += n
    return spots


def _project(counter: Counter[str]) -> Counter[str]:
    return Counter({k: v for k, v in counter.items() if any(p in k for p in _PROJECT)})


def _table(title: str, counter: Counter[str], total: int, top: int) -> list[str]:
    rows = [f"{title}:"]
    for frame, n in counter.most_common(top):
        rows.append(f"    {100 * n / total:5.1f}%  {frame}")
    return rows
