"""What the verbs of the ``quantperf`` command share: finding the storage, loading runs, writing reports.

Also :class:`VerbParser`, the parser class of every verb.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence


class CliError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class VerbParser(argparse.ArgumentParser):
    """The parser of a verb.

    With ``pass_on=DEST`` it hands arguments on to another program (``ab``: pytest), as
    ``quantperf ab`` always has: everything after the first ``--``, and before it every option it
    does not know, go in that order to the list ``DEST``; the rest is parsed as usual.  With
    ``strict=True`` an argument it does not know is its own usage error (its usage, its name),
    as ``quantperf fit``'s were; otherwise ``quantperf`` reports it.
    """

    def __init__(self, *args: Any, pass_on: str | None = None, strict: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pass_on = pass_on
        self.strict = strict

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        if self.pass_on is None:
            ns, unknown = super().parse_known_args(args, namespace)
            if unknown and self.strict:
                self.error(f"unrecognized arguments: {' '.join(unknown)}")
            return ns, unknown
        own = list(sys.argv[1:] if args is None else args)
        rest: list[str] = []
        if "--" in own:
            i = own.index("--")
            own, rest = own[:i], own[i + 1:]
        ns, unknown = super().parse_known_args(own, namespace)
        setattr(ns, self.pass_on, [*unknown, *rest])
        return ns, []


# --------------------------------------------------------------------------- loading

def _find_storage(explicit: str | None) -> str:
    """``--storage`` as given; otherwise ``.quantperf`` in this folder or the nearest parent that has one."""
    if explicit and explicit != ".quantperf":
        return explicit
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / ".quantperf").is_dir():
            return str(d / ".quantperf")
    return str(here / ".quantperf")


def _storage(args: argparse.Namespace):
    from ..store.storage import Storage

    return Storage(_find_storage(getattr(args, "storage", None)))


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".json") or os.sep in ref and os.path.exists(ref) or os.path.isfile(ref)


def load_run(args: argparse.Namespace, ref: str, hardware_id: str | None = None) -> tuple[dict[str, Any], str]:
    """A run document from a baseline name or a JSON file path; ``(doc, description)``."""
    from ..store.names import validate_name
    from ..store.schema import StorageError, validate_doc

    if _looks_like_path(ref):
        try:
            with open(ref, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise CliError(f"{ref}: no such file (give a baseline name, or the path of a run JSON file)") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise CliError(f"{ref}: not valid JSON ({e})") from None
        try:
            validate_doc(doc, ref)
        except StorageError as e:
            raise CliError(str(e)) from None
        if isinstance(doc, dict) and doc.get("kind") == "accept":
            raise CliError(f"{ref}: an acceptance record, not a run; give a saved run or a baseline")
        return doc, ref
    try:
        validate_name(ref)
    except ValueError as e:
        raise CliError(f"{ref!r} is neither a JSON file nor a valid baseline name: {e}") from None
    st = _storage(args)
    try:
        got = st.load(ref, hardware_id)
    except StorageError as e:
        raise CliError(str(e)) from None
    if got is None:
        names = [e["name"] for e in st.list()]
        near = difflib.get_close_matches(ref, names, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else (
            f"; stored: {', '.join(names)}" if names else "; nothing is stored there yet")
        raise CliError(f"no baseline named {ref!r} in {st.url}{hint} (or give --storage / a JSON file path)")
    return got[0], f"baseline {ref!r}"


def _tolerances(args: argparse.Namespace) -> dict[str, Any]:
    from ..verdicts.compare import parse_tolerance_spec

    try:
        return parse_tolerance_spec(getattr(args, "tolerance", None) or "")
    except ValueError as e:
        raise CliError(f"--tolerance: {e}") from None


def _per_test_tolerances(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``tolerance=`` of each test's quant_budget marker, as stored with its budgets."""
    from ..verdicts.compare import parse_tolerance

    out: dict[str, dict[str, Any]] = {}
    for nid, t in (doc.get("tests") or {}).items():
        tol = ((t or {}).get("budgets") or {}).get("tolerance") or {}
        if isinstance(tol, Mapping) and tol:
            try:
                out[nid] = {str(k): parse_tolerance(str(v)) for k, v in tol.items()}
            except ValueError:
                continue
    return out


def _compare(args: argparse.Namespace, base: Mapping[str, Any], cur: Mapping[str, Any], base_name: str):
    from ..verdicts.compare import compare_runs

    history = None
    if not _looks_like_path(base_name):
        try:  # saved runs of the baseline's name measure the run-to-run spread, as in the plugin
            history = _storage(args).history(base_name, skip_invalid=True)
        except Exception:
            history = None
    comp = compare_runs(base, cur, _tolerances(args), per_test=_per_test_tolerances(cur),
                        gate_cross_hardware=bool(getattr(args, "gate_cross_hardware", False)), history=history)
    from ..report.view import with_comparison

    cur = dict(cur)
    cur["tests"] = with_comparison(cur.get("tests") or {}, comp)  # the written JSON carries the verdicts
    cur["baseline"] = {"name": base_name, "hardware_id": comp.baseline_hardware_id,
                       "matched_hardware": comp.same_hardware, "created": base.get("created")}
    return comp, cur


def _out(args: argparse.Namespace):
    from ..report.terminal import StreamOut

    colour = {"always": True, "never": False}.get(getattr(args, "color", "auto"))
    return StreamOut(sys.stdout, colour=colour)


def _verbosity(args: argparse.Namespace) -> int:
    return int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet", 0) or 0)


def _write_outputs(args: argparse.Namespace, view: dict[str, Any], doc: Mapping[str, Any],
                   baseline_doc: Mapping[str, Any] | None) -> None:
    from ..report import write_reports

    html, js, md = getattr(args, "html", None), getattr(args, "json", None), getattr(args, "markdown", None)
    if not (html or js or md):
        return
    try:
        written = write_reports(view, doc, html=html, json_path=js, markdown=md, baseline_doc=baseline_doc,
                                step_summary=False)
    except OSError as e:
        raise CliError(f"cannot write the report: {e}") from None
    for p in written:
        print(f"wrote {p}", file=sys.stderr)


def _history_for(args: argparse.Namespace, name: str | None, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not name or not (getattr(args, "html", None) or getattr(args, "json", None)):
        return []
    from ..report import load_history

    try:
        return load_history(_storage(args), name, doc, saved=True)
    except Exception as e:
        print(f"quantperf: history of {name!r} not shown: {e}", file=sys.stderr)
        return []


def _print_table(rows: Sequence[Sequence[Any]]) -> None:
    from .._util.text import text_table

    print(text_table(rows))
