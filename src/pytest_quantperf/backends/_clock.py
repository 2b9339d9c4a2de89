"""Process CPU time over a timed region, shared by the backends whose work runs in native threads.

Its own module so that one backend does not import another for it.
"""
from __future__ import annotations

import time

__all__ = ["CpuClock"]


class CpuClock:
    """Process CPU time over wall time, in percent of one core (threads of llama.cpp included)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self._c0 = 0.0
        self._t0 = 0.0

    def _cpu(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def start(self) -> None:
        self._c0 = self._cpu()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        wall = time.perf_counter() - self._t0
        return 100.0 * (self._cpu() - self._c0) / wall if wall > 0 else 0.0
