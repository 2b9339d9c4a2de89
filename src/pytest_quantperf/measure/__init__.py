"""Measuring: generation timing, memory and energy (``generate``), out-of-memory handling and host
peak memory (``memory``), the host's load and core pinning (``host``), and what a step computes
(``work``, ``work_count``).

This package's face imports nothing, so ``measure.host`` stays as light as it is for ``quantperf ab``.
"""
