"""``CUDA_VISIBLE_DEVICES`` read the way CUDA reads it: one parser for envinfo and scale.

Kept apart and free of torch and NVML so that reading it never starts CUDA (scale.py pins xdist
workers by rewriting it before CUDA starts).
"""
from __future__ import annotations

import os
from typing import Mapping

__all__ = ["visible_entries"]


def visible_entries(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (indices, ``GPU-`` UUIDs, MIG ids), or None when unset.

    Blank entries are skipped; CUDA stops at the first invalid entry, and ``-1`` (or an empty
    value) means "no GPU", so the list ends before any entry that starts with ``-``.
    """
    cvd = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if cvd is None:
        return None
    out = []
    for x in (p.strip() for p in cvd.split(",")):
        if not x:
            continue
        if x.startswith("-"):
            break
        out.append(x)
    return out
