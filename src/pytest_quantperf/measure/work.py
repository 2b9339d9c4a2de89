"""The work of one decode, counted: plain data and the by-name diff a verdict names.

Unchanged code dispatches the same torch operators, makes the same Python calls and reads the
device the same number of times in every process, busy host or not, so these counts are compared
exactly where wall time can only be compared statistically. This module holds what was counted
(:class:`Work`) and how two counts differ by name (:func:`work_changes`,
:func:`format_changes`); the counting itself needs torch and lives in ``work_count``. Pure Python:
the verdicts, the stores and the ``quantperf`` command read it without torch or pytest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: what is counted, in the order reports show it; the metric of kind ``k`` is ``f"{k}_per_token"``
KINDS: tuple[str, ...] = ("ops", "py_calls", "syncs", "launches")

#: the metric each kind is recorded as, and back
METRIC_OF: dict[str, str] = {k: f"{k}_per_token" for k in KINDS}
KIND_OF: dict[str, str] = {m: k for k, m in METRIC_OF.items()}

#: a count over the whole generate, or over setup + prefill, a window of decode steps and the end,
#: with the window's steps scaled to every decode step (``work_count`` says when which)
SCOPE_WHOLE = "whole generate"
SCOPE_WINDOW = "window"


@dataclass(frozen=True)
class Work:
    """What one greedy decode of ``tokens`` new tokens (per sequence) did, by kind and by name.

    ``totals[kind]`` is the count over the decode (estimated from a window of decode steps when
    ``scope`` is ``window``; then it may be fractional), ``by_name[kind][name]`` the same split by
    operator, Python function, sync or kernel name. ``kinds_counted`` lists the kinds this device
    can count (``launches`` only on CUDA); ``detail`` says how (window size, sync sources).
    """

    tokens: int
    prompt_tokens: int
    totals: Mapping[str, float] = field(default_factory=dict)
    by_name: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    scope: str = SCOPE_WHOLE
    batch: int = 1
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kinds_counted(self) -> tuple[str, ...]:
        return tuple(k for k in KINDS if k in self.totals)

    def per_token(self, kind: str) -> float:
        """The kind's count per generated token (per sequence): the figure gated."""
        return float(self.totals[kind]) / max(self.tokens, 1)

    def by_name_per_token(self, kind: str) -> dict[str, float]:
        t = max(self.tokens, 1)
        return {n: float(c) / t for n, c in (self.by_name.get(kind) or {}).items()}

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "prompt_tokens": self.prompt_tokens, "batch": self.batch,
                "scope": self.scope, "totals": {k: _num(v) for k, v in self.totals.items()},
                "by_name": {k: {n: _num(c) for n, c in sorted(v.items())} for k, v in self.by_name.items()},
                "detail": dict(self.detail)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Work":
        return cls(tokens=int(d["tokens"]), prompt_tokens=int(d.get("prompt_tokens", 0)),
                   batch=int(d.get("batch", 1)), scope=str(d.get("scope", SCOPE_WHOLE)),
                   totals={str(k): float(v) for k, v in (d.get("totals") or {}).items()},
                   by_name={str(k): {str(n): float(c) for n, c in (v or {}).items()}
                            for k, v in (d.get("by_name") or {}).items()},
                   detail=dict(d.get("detail") or {}))

    def metric_extra(self, kind: str) -> dict[str, Any]:
        """What the metric ``{kind}_per_token`` keeps beside its value: counts by name over the
        counted decode (``by_name``) and the tokens they are over, so a diff names what changed."""
        return {"by_name": {n: _num(c) for n, c in sorted((self.by_name.get(kind) or {}).items())},
                "tokens": self.tokens, "total": _num(self.totals.get(kind, 0)),
                "prompt_tokens": self.prompt_tokens, "batch": self.batch, "scope": self.scope,
                **({"detail": dict(self.detail)} if self.detail else {})}


def _num(v: float) -> float | int:
    """Counts stay integers in JSON where they are whole (exact diffs, smaller files)."""
    f = float(v)
    return int(f) if f.is_integer() else round(f, 6)


@dataclass(frozen=True)
class NameChange:
    """One name's change between two counts, per generated token."""

    name: str
    base: float
    cur: float

    @property
    def delta(self) -> float:
        return self.cur - self.base


def _per_token_by_name(d: Mapping[str, Any], kind: str) -> dict[str, float]:
    """Per-token counts by name from a :meth:`Work.to_dict` document or a metric's ``extra``."""
    by = d.get("by_name") or {}
    if isinstance(by.get(kind), Mapping):  # a Work document: by_name is keyed by kind first
        by = by[kind]
    elif by and any(isinstance(v, Mapping) for v in by.values()):  # a Work document without this kind
        by = {}
    t = float(d.get("tokens") or 1) or 1.0
    return {str(n): float(c) / t for n, c in by.items()}


def work_changes(base: Mapping[str, Any], cur: Mapping[str, Any], kind: str, top: int = 5) -> list[NameChange]:
    """The ``top`` largest per-name changes per generated token from ``base`` to ``cur``.

    Each side is a :meth:`Work.to_dict` document or the ``extra`` of a ``{kind}_per_token`` metric
    (``{"by_name": {name: count}, "tokens": n}``); counts are divided by their own tokens, so runs
    of different lengths compare per token. Largest absolute change first, ties by name; names
    whose per-token count is unchanged are left out.
    """
    b, c = _per_token_by_name(base, kind), _per_token_by_name(cur, kind)
    out = [NameChange(n, b.get(n, 0.0), c.get(n, 0.0)) for n in set(b) | set(c)]
    out = [x for x in out if abs(x.delta) > 1e-9]
    out.sort(key=lambda x: (-abs(x.delta), x.name))
    return out[:max(top, 0)]


def fmt_count(x: float) -> str:
    """+1, +0.5, -0.0312, +420, -6,720: signed, three significant digits below 100."""
    if abs(x) >= 100:
        return f"{x:+,.0f}"
    s = f"{x:+.3g}"
    return s if "e" not in s else f"{x:+.6f}".rstrip("0").rstrip(".")


def format_changes(changes: list[NameChange], unit: str = "per token") -> str:
    """``+1 aten._local_scalar_dense per token, +0.5 aten.select per token`` (empty: no change)."""
    return ", ".join(f"{fmt_count(x.delta)} {x.name} {unit}".rstrip() for x in changes)


#: what a work diff says when no name's count per token moved
NO_CHANGE_BY_NAME = "no change by name"


def metric_changes(metric: str, base_extra: Mapping[str, Any] | None, cur_extra: Mapping[str, Any] | None,
                   top: int = 5) -> list[NameChange] | None:
    """:func:`work_changes` of the work figure ``metric`` (its catalogue name, e.g. ``ops_per_token``)
    between two metric extras; None where it is no work figure or a side kept no counts by name."""
    kind = KIND_OF.get(metric)
    if kind is None or "by_name" not in (base_extra or {}) or "by_name" not in (cur_extra or {}):
        return None
    return work_changes(base_extra or {}, cur_extra or {}, kind, top)


def describe_changes(base: Mapping[str, Any], cur: Mapping[str, Any], kind: str, top: int = 5) -> str:
    """One line naming the largest changes of ``kind`` by name, or ``no change by name``."""
    return format_changes(work_changes(base, cur, kind, top)) or NO_CHANGE_BY_NAME
