"""The tolerance grammar: how far a metric may move before a comparison counts it.

Split out of :mod:`pytest_quantperf.verdicts.compare` because ``pytest_configure`` parses
``--quantperf-tolerance`` in every pytest run where the plugin is installed, and the verdict rules
need numpy and scipy; this module needs neither (only :mod:`pytest_quantperf.results`'s metric
catalogue), so a session that never uses quantperf stays light.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Tolerance", "parse_tolerance", "parse_tolerance_spec", "DEFAULT_TOLERANCES", "tolerance_for",
           "base_metric_name"]

_FORMAT_HELP = ("expected NAME=VALUE[,NAME=VALUE...] where VALUE is relative with % (\"5%\") "
                "or absolute without (\"0.01\"), e.g. tokens_per_s=5%,vram_mb=2%,accuracy=0.01")


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move before it counts: ``relative`` fraction (0.05 = 5%) or absolute."""

    value: float
    relative: bool

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise ValueError(f"tolerance value must be a number, got {self.value!r}")
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"tolerance must be a finite number >= 0, got {self.value!r}")

    @property
    def text(self) -> str:
        """``"5%"`` or ``"0.01"``; parses back to an equal Tolerance."""
        if not self.relative:
            return repr(float(self.value))
        for decimals in range(0, 18 if self.value * 100 < 1e15 else 0):
            s = f"{self.value * 100:.{decimals}f}"
            if float(s) / 100 == self.value:
                return (s.rstrip("0").rstrip(".") if "." in s else s) + "%"
        return repr(self.value * 100) + "%"

    def __str__(self) -> str:
        return self.text

    def exceeded(self, base: float, cur: float) -> bool:
        """Whether ``cur`` is farther from ``base`` than this tolerance allows (either direction)."""
        delta = cur - base
        if self.relative:
            if base == 0:
                return delta != 0
            return abs(delta) / abs(base) > self.value
        return abs(delta) > self.value


def parse_tolerance(text: str | float | int) -> Tolerance:
    """``"5%"`` → relative 0.05; ``"0.01"`` or ``0.01`` → absolute 0.01.  ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"invalid tolerance {text!r}: {_FORMAT_HELP}")
    if isinstance(text, (int, float)):
        return Tolerance(float(text), False)
    if not isinstance(text, str):
        raise ValueError(f"invalid tolerance {text!r}: {_FORMAT_HELP}")
    s = text.strip()
    relative = s.endswith("%")
    num = s[:-1].strip() if relative else s
    if not num or not all(ch in "0123456789.eE+-" for ch in num):
        raise ValueError(f"invalid tolerance {text!r}: {_FORMAT_HELP}")
    try:
        v = float(num)
    except ValueError:
        raise ValueError(f"invalid tolerance {text!r}: {_FORMAT_HELP}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"invalid tolerance {text!r}: must be a finite number >= 0; {_FORMAT_HELP}")
    return Tolerance(v / 100 if relative else v, relative)


def _valid_metric_name(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def parse_tolerance_spec(spec: str) -> dict[str, Tolerance]:
    """``"tokens_per_s=5%,vram_mb=2%,accuracy=0.01"`` → ``{name: Tolerance}``.

    Unknown names are allowed (user metrics from ``quantperf.record``) but must be identifiers
    (dotted ones such as ``ref.tokens_per_s`` too).  Any bad part raises ValueError naming it.
    """
    if not isinstance(spec, str):
        raise ValueError(f"invalid tolerance spec {spec!r}: {_FORMAT_HELP}")
    out: dict[str, Tolerance] = {}
    if not spec.strip():
        return out
    for part in spec.split(","):
        if "=" not in part:
            raise ValueError(f"invalid tolerance spec part {part!r}: {_FORMAT_HELP}")
        name, _, value = part.partition("=")
        name = name.strip()
        if not _valid_metric_name(name):
            raise ValueError(f"invalid metric name {name!r} in tolerance spec part {part!r}: "
                             f"names are identifiers such as tokens_per_s; {_FORMAT_HELP}")
        if name in out:
            raise ValueError(f"metric {name!r} appears twice in tolerance spec {spec!r}")
        try:
            out[name] = parse_tolerance(value)
        except ValueError:
            raise ValueError(f"invalid tolerance {value.strip()!r} for {name} in tolerance spec part "
                             f"{part!r}: {_FORMAT_HELP}") from None
    return out


@functools.cache
def _default_tolerances() -> dict[str, Tolerance]:
    """The catalogue's tolerances, built on first use (the catalogue is not needed to parse options)."""
    from ..results import METRICS

    return {n: parse_tolerance(i.tolerance) for n, i in METRICS.items()}


def __getattr__(name: str) -> Any:
    """``DEFAULT_TOLERANCES``: per-metric defaults from :data:`pytest_quantperf.results.METRICS`."""
    if name == "DEFAULT_TOLERANCES":
        return _default_tolerances()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def base_metric_name(name: str) -> str:
    """``ref.tokens_per_s`` and ``tokens_per_s[nf4]`` share the tolerance of ``tokens_per_s``."""
    base = name.split("[", 1)[0]
    return base[4:] if base.startswith("ref.") else base


def tolerance_for(nodeid: str, name: str, tolerances: Mapping[str, Tolerance],
                  per_test: Mapping[str, Mapping[str, Tolerance]] | None = None) -> Tolerance:
    """Most specific tolerance: the test's own, then the run's, then the catalogue default."""
    base = base_metric_name(name)
    own = (per_test or {}).get(nodeid) or {}
    for table in (own, tolerances):
        if name in table:
            return table[name]
        if base in table:
            return table[base]
    defaults = _default_tolerances()
    if base in defaults:
        return defaults[base]
    from ..results import metric_info

    return parse_tolerance(metric_info(name).tolerance)
