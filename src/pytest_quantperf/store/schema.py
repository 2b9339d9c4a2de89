"""The run document's format: its shape checks and its JSON form.

Baselines, history entries and ``--quantperf-json`` share one document (``docs/architecture.md``,
"The run document"). :func:`validate_doc` checks a document read from anywhere (a stored file, a
file given on the command line) and raises :class:`StorageError` naming its source and the first
problem; :func:`dumps` writes the diffable JSON every stored file has (sorted keys, one-space
indent). Standard library only, nothing of fsspec: ``storage`` builds on this module.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from ..results import SCHEMA

__all__ = ["StorageError", "validate_doc", "dumps"]

_BETTER = ("lower", "higher", "none")


class StorageError(ValueError):
    """A stored file cannot be used: it names the file and says what to do."""


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_num_list(v: Any, what: str, src: str) -> None:
    if v is None:
        return
    if not isinstance(v, list) or not all(_is_num(x) for x in v):
        raise StorageError(f"{src}: {what} must be a list of numbers")


def validate_doc(doc: Any, source: str = "<document>") -> dict[str, Any]:
    """Check the shape of a run document (or an ``accept`` history entry); return it.

    Raises :class:`StorageError` naming ``source`` and the first problem found.
    """
    fix = "; delete or move the file aside, or save a new baseline under this name"
    if not isinstance(doc, dict):
        raise StorageError(f"{source}: not a quantperf run document (top level is {type(doc).__name__}, "
                           f"expected an object){fix}")
    schema = doc.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise StorageError(f"{source}: missing or invalid 'schema' ({schema!r}); not a quantperf run "
                           f"document{fix}")
    if schema > SCHEMA:
        raise StorageError(f"{source}: written by a newer pytest-quantperf (schema {schema}, this version "
                           f"reads up to {SCHEMA}); upgrade pytest-quantperf to read it, or save a new "
                           f"baseline under another name")
    try:
        _validate_body(doc, source)
    except StorageError as e:
        raise StorageError(f"{e}{fix}") from None
    return doc


def _validate_body(doc: dict[str, Any], src: str) -> None:
    if doc.get("kind") == "accept":
        for k in ("name", "nodeid", "metric"):
            if not isinstance(doc.get(k), str):
                raise StorageError(f"{src}: acceptance entry without a string {k!r}")
        if not _is_num(doc.get("value")):
            raise StorageError(f"{src}: acceptance entry without a numeric 'value'")
        return
    for k in ("name", "created"):
        if doc.get(k) is not None and not isinstance(doc.get(k), str):
            raise StorageError(f"{src}: {k!r} must be a string")
    for k in ("env", "git", "options"):
        if doc.get(k) is not None and not isinstance(doc.get(k), dict):
            raise StorageError(f"{src}: {k!r} must be an object")
    env = doc.get("env") or {}
    if env.get("hardware_id") is not None and not isinstance(env.get("hardware_id"), str):
        raise StorageError(f"{src}: env.hardware_id must be a string")
    tests = doc.get("tests")
    if not isinstance(tests, dict):
        raise StorageError(f"{src}: 'tests' must be an object of node id → test")
    for nodeid, t in tests.items():
        if not isinstance(t, dict):
            raise StorageError(f"{src}: test {nodeid!r} is not an object")
        metrics = t.get("metrics", {})
        if not isinstance(metrics, dict):
            raise StorageError(f"{src}: metrics of {nodeid!r} must be an object")
        for k in ("budgets", "models"):
            if t.get(k) is not None and not isinstance(t.get(k), dict):
                raise StorageError(f"{src}: {k!r} of {nodeid!r} must be an object")
        if t.get("verdicts") is not None and not isinstance(t.get("verdicts"), list):
            raise StorageError(f"{src}: 'verdicts' of {nodeid!r} must be a list")
        for mname, m in metrics.items():
            where = f"metric {mname!r} of {nodeid!r}"
            if not isinstance(m, dict):
                raise StorageError(f"{src}: {where} is not an object")
            if not _is_num(m.get("value")):
                raise StorageError(f"{src}: {where} has no numeric 'value'")
            _check_num_list(m.get("samples"), f"samples of {where}", src)
            _check_num_list(m.get("items"), f"items of {where}", src)
            for k in ("unit", "kind", "model", "name"):
                if m.get(k) is not None and not isinstance(m.get(k), str):
                    raise StorageError(f"{src}: {k!r} of {where} must be a string")
            if m.get("better") is not None and m.get("better") not in _BETTER:
                raise StorageError(f"{src}: 'better' of {where} must be one of {_BETTER}")
            if m.get("flags") is not None and not (isinstance(m["flags"], list)
                                                   and all(isinstance(x, str) for x in m["flags"])):
                raise StorageError(f"{src}: flags of {where} must be a list of strings")
            if m.get("extra") is not None and not isinstance(m.get("extra"), dict):
                raise StorageError(f"{src}: extra of {where} must be an object")
    acc = doc.get("accepted", {})
    if acc is None:
        return
    if not isinstance(acc, dict):
        raise StorageError(f"{src}: 'accepted' must be an object of node id → metric → record")
    for nodeid, per in acc.items():
        if not isinstance(per, dict):
            raise StorageError(f"{src}: accepted records of {nodeid!r} must be an object")
        for mname, rec in per.items():
            if not isinstance(rec, dict) or not _is_num(rec.get("value")):
                raise StorageError(f"{src}: accepted record of {nodeid!r} {mname!r} needs a numeric 'value'")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Mapping):
        return dict(o)
    raise TypeError(f"value of type {type(o).__name__} cannot be stored in a run document: {o!r}")


def dumps(doc: Mapping[str, Any]) -> str:
    """Diffable JSON: sorted keys, one-space indent, trailing newline."""
    return json.dumps(doc, sort_keys=True, indent=1, default=_json_default, ensure_ascii=False) + "\n"
