"""Baseline names: the one rule for ``--quantperf-save``, ``--quantperf-baseline`` and the CLI.

Its own module because ``pytest_configure`` checks these names in every run, and
:mod:`pytest_quantperf.store.storage` imports fsspec, which a session that never saves or compares must
not pay for.
"""
from __future__ import annotations

import re

__all__ = ["validate_name"]

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_RESERVED_FIRST = ("by-hardware",)


def validate_name(name: str) -> str:
    """Baseline names: ``/``-separated segments of letters, digits and ``._-``.

    ``..``, ``.``, empty segments, absolute paths and the reserved first segment
    ``by-hardware`` are refused with a ValueError that says what is allowed.
    """
    help_ = ("baseline names are segments of letters, digits, '.', '_' and '-' separated by '/', "
             "e.g. 'main' or 'release/1.2'")
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid baseline name {name!r}: empty; {help_}")
    if name.startswith("/") or name.startswith("\\") or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"invalid baseline name {name!r}: absolute paths are not allowed; {help_}")
    segs = name.split("/")
    for seg in segs:
        if not seg:
            raise ValueError(f"invalid baseline name {name!r}: empty segment; {help_}")
        if seg in (".", ".."):
            raise ValueError(f"invalid baseline name {name!r}: '{seg}' is not allowed; {help_}")
        if not _SEGMENT.match(seg):
            raise ValueError(f"invalid baseline name {name!r}: segment {seg!r} has other characters; {help_}")
    if segs[0] in _RESERVED_FIRST:
        raise ValueError(f"invalid baseline name {name!r}: '{segs[0]}' is reserved; {help_}")
    return name
