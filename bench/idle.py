"""Is the machine idle while a benchmark runs? A stored time figure means little otherwise.

    with LoadGuard() as guard:
        ...run the benchmark...
    guard.check(allow_busy=args.allow_busy)   # raises SystemExit if others used the CPU
    result["machine_load"] = guard.report()

The load average alone cannot tell: a benchmark that keeps both cores of a 2-core machine
busy raises the 1-minute load average to about 2 all by itself. So the guard records
`os.getloadavg()` before and after (and samples it every few seconds), and it also measures
what it can decide on: the CPU time that *other* processes used during the run, from the
machine's total busy time in /proc/stat minus this process tree's own (`os.times`). It
refuses when the load average was above LIMIT before the run started, or when other
processes used more than LIMIT - 1 cores on average during it (with the default 1.5: another
program busy half the time). `--allow-busy` overrides it, and the report then says so.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

LIMIT = 1.5


def _busy_seconds() -> float | None:
    """Seconds all CPUs together spent busy since boot (Linux), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadGuard:
    """Records the machine's load around a `with` block; see the module's docstring."""

    def __init__(self, limit: float = LIMIT, every_s: float = 5.0) -> None:
        self.limit, self.every_s = limit, every_s
        self.samples: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> LoadGuard:
        self.before = os.getloadavg()
        self.t0, self.busy0, self.own0 = time.time(), _busy_seconds(), _own_seconds()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = os.getloadavg()
        self.seconds = time.time() - self.t0
        busy1 = _busy_seconds()
        own = _own_seconds() - self.own0
        self.others_cores = (None if busy1 is None or self.busy0 is None else
                             max(0.0, (busy1 - self.busy0 - own) / max(self.seconds, 1e-9)))

    def problems(self) -> list[str]:
        found = []
        if self.before[0] > self.limit:
            found.append(f"the 1-minute load average was {self.before[0]:.2f} before the run "
                         f"(limit {self.limit})")
        if self.others_cores is not None and self.others_cores > self.limit - 1:
            found.append(f"other processes used {self.others_cores:.2f} cores on average "
                         f"during the run (limit {self.limit - 1:.1f})")
        return found

    def check(self, allow_busy: bool = False) -> None:
        """Raise SystemExit (no JSON is written) if the machine was not idle."""
        if self.problems() and not allow_busy:
            raise SystemExit("not writing the results: " + "; ".join(self.problems())
                             + ". Rerun with nothing else running, or pass --allow-busy "
                             "(the results then record that the machine was busy).")

    def report(self, allow_busy: bool = False) -> dict[str, Any]:
        """What the results JSON stores about the machine's load."""
        return {
            "loadavg_before": [round(x, 2) for x in self.before],
            "loadavg_after": [round(x, 2) for x in self.after],
            "loadavg_1min_max_during": round(max(self.samples, default=self.after[0]), 2),
            "other_processes_cores": (None if self.others_cores is None
                                      else round(self.others_cores, 2)),
            "limit": self.limit, "busy": self.problems(),
            "overridden": bool(self.problems()) and allow_busy,
        }
