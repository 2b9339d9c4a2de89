"""Can this host count the instructions a thread retires (``perf_event_open``), and how steady is that count?

Wall time of a batch-1 CUDA decode moves ±30% between rounds on a shared GPU host, with the
launching thread's core speed moving from second to second.  The number of instructions the host
retires for the same work does not depend on how fast the core runs it: if the kernel lets a
process count them, a host-side figure could be as steady as kernel time is for the GPU.  Opens
the hardware instruction and cycle counters for the calling thread, times a fixed pure-Python loop
``--reps`` times and prints per repeat wall time, instructions and cycles, with each one's CV::

    python benchmarks/perf_counters.py
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import struct
import time

PERF_TYPE_HARDWARE, HW_CPU_CYCLES, HW_INSTRUCTIONS = 0, 0, 1
SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}.get(os.uname().machine)


def open_counter(config: int) -> int:
    """A file descriptor counting ``config`` for this thread, user space only; OSError if refused."""
    attr = bytearray(128)
    # type, size, config; then sample_period, sample_type, read_format; flags: exclude_kernel, exclude_hv (counting from the open)
    struct.pack_into("IIQ", attr, 0, PERF_TYPE_HARDWARE, 128, config)
    struct.pack_into("Q", attr, 40, (1 << 5) | (1 << 6))
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(bytes(attr), 128)
    fd = libc.syscall(SYS_PERF_EVENT_OPEN, buf, 0, -1, -1, 0)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


def read_counter(fd: int) -> int:
    return struct.unpack("Q", os.read(fd, 8))[0]


def work(n: int = 200000) -> int:
    x = 0
    for i in range(n):
        x += i & 7
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    try:
        print("perf_event_paranoid:", open("/proc/sys/kernel/perf_event_paranoid").read().strip())
    except OSError as e:
        print("perf_event_paranoid: unreadable", e)
    fds = {}
    for name, cfg in (("instructions", HW_INSTRUCTIONS), ("cycles", HW_CPU_CYCLES)):
        try:
            fds[name] = open_counter(cfg)
        except OSError as e:
            print(f"{name}: cannot count ({e})")
    rows = []
    for _ in range(a.reps):
        before = {k: read_counter(fd) for k, fd in fds.items()}
        t = time.perf_counter()
        work()
        wall = time.perf_counter() - t
        rows.append({"wall_ms": wall * 1e3, **{k: read_counter(fd) - before[k] for k, fd in fds.items()}})
    for k in rows[0]:
        xs = [r[k] for r in rows]
        m = statistics.fmean(xs)
        cv = statistics.stdev(xs) / m * 100 if m else float("nan")
        print(f"{k:12} mean {m:,.3f}  CV {cv:.3f}%  min {min(xs):,.3f}  max {max(xs):,.3f}")


if __name__ == "__main__":
    main()
