"""Named baselines and the run history, on a local directory or any fsspec URL.

Layout under the storage root::

    baselines/<NAME>.json                          latest save of NAME (any hardware)
    baselines/by-hardware/<hardware_id>/<NAME>.json  NAME as saved on that hardware
    history/<UTC time>-<pid>_<NAME, / as __>.json   every saved run and every acceptance

``main`` saved on an H100 and ``main`` saved on an A10G are kept apart, so a comparison finds
the baseline of its own hardware first.  All files are JSON (``sort_keys``, ``indent=1``: diffable);
there is no pickle anywhere.

Saving **merges**: the run's tests replace the same tests of the stored baseline of that
hardware and every other test is kept, so CI matrix shards saving into one name never drop
each other's tests.  Acceptance records are kept across saves.

Atomicity.  Local paths: the whole read-merge-write runs under a file lock
(``baselines/<NAME>.json.lock``) and each file is written to a temporary file in the same
directory, then ``os.replace``-d: readers see the old or the new file, never half of one.
Object stores (``s3://``, ``gs://``, ``memory://``): each file is one put of the whole object,
so readers never see a partial file, but there is no lock: two shards saving the same name at
the same moment can race between read and write.  After writing, a save reads the baseline
back and merges again if its tests are missing (a few tries), which closes most of that
window but not all of it; the history keeps every shard's run regardless.  Where shards save
at exactly the same time, give them distinct names or save from one job.

Reading validates: a file that is not JSON, has the wrong shape, or a ``schema`` newer than
this version raises :class:`StorageError` naming the file and what to do.  A failed read never
modifies a file.  The shape checks and the JSON form live in :mod:`schema` (``validate_doc``,
``dumps``, ``StorageError``).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import posixpath
import random
import re
import time
from typing import Any, Iterator, Mapping

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .._util.io import write_atomic
from ..results import SCHEMA
from .names import validate_name
from .schema import StorageError, dumps, validate_doc

__all__ = ["Storage", "BaselineNotFound"]

class BaselineNotFound(StorageError):
    """No baseline of that name exists in the storage."""


def _hardware_dir(hardware_id: str | None) -> str:
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", hardware_id or "unknown").strip("-.")
    return s or "unknown"


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _iso(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Lock:
    """A filelock whose timeout becomes a StorageError that says what is holding things up."""

    def __init__(self, lock: Any, path: str, timeout: float) -> None:
        self.lock, self.path, self.timeout = lock, path, timeout

    def __enter__(self) -> "_Lock":
        import filelock

        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise StorageError(f"{self.path}: could not take the lock within {self.timeout:g} s; another "
                               f"save of this baseline is running (or hung): wait for it or end it") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


class Storage:
    """Baselines and history under one root: a local directory or an fsspec URL."""

    def __init__(self, url_or_path: str | os.PathLike[str], *, lock_timeout: float = 120.0,
                 **storage_options: Any) -> None:
        self.url = os.fspath(url_or_path)
        self.fs, root = fsspec.core.url_to_fs(self.url, **storage_options)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = root.rstrip("/") if root not in ("/", "") else root
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # ---- paths -------------------------------------------------------------------------
    def _join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if self.root else posixpath.join(*parts)

    def _rel(self, path: str, sub: str) -> str:
        """``path`` relative to ``<root>/<sub>``, whatever leading slashes the filesystem adds."""
        p = path.replace("\\", "/").lstrip("/")
        base = self._join(sub).replace("\\", "/").lstrip("/").rstrip("/") + "/"
        return p[len(base):] if p.startswith(base) else p.rsplit("/", 1)[-1]

    def baseline_path(self, name: str, hardware_id: str | None = None) -> str:
        """Where baseline ``name`` lives (its copy for ``hardware_id`` when given)."""
        validate_name(name)
        parts = name.split("/")
        parts[-1] += ".json"
        if hardware_id is None:
            return self._join("baselines", *parts)
        return self._join("baselines", "by-hardware", _hardware_dir(hardware_id), *parts)

    def _history_path(self, name: str) -> str:
        t = _utcnow()
        stamp = t.strftime("%Y%m%dT%H%M%S.%fZ")
        return self._join("history", f"{stamp}-{os.getpid()}-{random.randrange(16**4):04x}_"
                          f"{name.replace('/', '__')}.json")

    # ---- low-level io --------------------------------------------------------------------
    def _read(self, path: str) -> dict[str, Any] | None:
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StorageError(f"{path}: is a directory, expected a JSON file") from None
        try:
            text = raw.decode("utf-8")
            doc = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise StorageError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:200]}); "
                               f"the file is corrupt: restore it from version control or the history, "
                               f"or delete it and save the baseline again") from None
        return validate_doc(doc, path)

    def _write(self, path: str, doc: Mapping[str, Any]) -> None:
        data = dumps(doc).encode("utf-8")
        if self.local:
            write_atomic(path, data, prefix=".tmp-", suffix=".json", durable=True)
        else:
            parent = posixpath.dirname(path)
            try:
                self.fs.makedirs(parent, exist_ok=True)
            except Exception:  # object stores have no real directories
                pass
            self.fs.pipe_file(path, data)

    def _lock(self, name: str):
        """A file lock for the read-merge-write of ``name`` (local storage only)."""
        if not self.local:
            import contextlib

            return contextlib.nullcontext()
        import filelock

        path = self.baseline_path(name) + ".lock"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return _Lock(filelock.FileLock(path, timeout=self.lock_timeout), path, self.lock_timeout)

    def _find(self, sub: str) -> list[str]:
        base = self._join(sub)
        try:
            if not self.fs.exists(base):
                return []
            return sorted(p for p in self.fs.find(base) if p.endswith(".json"))
        except FileNotFoundError:
            return []

    # ---- public API ----------------------------------------------------------------------
    def save(self, name: str, run_doc: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``run_doc``'s tests into baseline ``name`` of its hardware; append it to the history.

        Returns the merged baseline document as written.  An invalid ``run_doc`` or an
        unreadable stored baseline raises before anything is written.
        """
        validate_name(name)
        doc = json.loads(dumps(run_doc))  # a plain, JSON-only deep copy
        doc.setdefault("schema", SCHEMA)
        doc.setdefault("tests", {})
        doc.setdefault("created", _iso(_utcnow()))
        validate_doc(doc, f"run document for baseline {name!r}")
        doc["name"] = name
        doc["saved"] = _iso(_utcnow())
        hid = (doc.get("env") or {}).get("hardware_id")
        hw_path = self.baseline_path(name, hid or "unknown")
        latest_path = self.baseline_path(name)
        with self._lock(name):
            merged = self._merge_into(hw_path, latest_path, hid, doc)
            self._write(hw_path, merged)
            self._write(latest_path, merged)
            if not self.local:
                merged = self._verify_object_store(hw_path, latest_path, hid, doc, merged)
            entry = dict(doc)
            entry["kind"] = "run"
            self._write(self._history_path(name), entry)
        return merged

    def _merge_into(self, hw_path: str, latest_path: str, hid: str | None,
                    doc: dict[str, Any]) -> dict[str, Any]:
        old = self._read(hw_path)
        if old is None:
            latest = self._read(latest_path)
            if latest is not None and (latest.get("env") or {}).get("hardware_id") == hid:
                old = latest
        merged = dict(doc)
        if old is not None:
            tests = dict(old.get("tests") or {})
            tests.update(doc.get("tests") or {})
            merged["tests"] = tests
            acc: dict[str, Any] = {k: dict(v) for k, v in (old.get("accepted") or {}).items()}
            for nodeid, per in (doc.get("accepted") or {}).items():
                acc.setdefault(nodeid, {}).update(per)
            if acc:
                merged["accepted"] = acc
        return merged

    def _verify_object_store(self, hw_path: str, latest_path: str, hid: str | None,
                             doc: dict[str, Any], merged: dict[str, Any], tries: int = 3) -> dict[str, Any]:
        """Narrow the read-merge-write race of object stores: re-read, re-merge if our tests vanished."""
        mine = set(doc.get("tests") or {})
        for _ in range(tries):
            time.sleep(random.uniform(0.05, 0.25))
            now = self._read(hw_path) or {}
            if mine <= set(now.get("tests") or {}):
                return now
            merged = self._merge_into(hw_path, latest_path, hid, doc)
            self._write(hw_path, merged)
            self._write(latest_path, merged)
        return merged

    def load(self, name: str, hardware_id: str | None = None) -> tuple[dict[str, Any], bool] | None:
        """``(doc, matched_hardware)`` for baseline ``name``, or None when there is none.

        Prefers the copy saved on ``hardware_id``; otherwise the latest save of ``name``, with
        ``matched_hardware`` telling whether it happens to come from that hardware.
        """
        validate_name(name)
        if hardware_id:
            doc = self._read(self.baseline_path(name, hardware_id))
            if doc is not None:
                return doc, True
        doc = self._read(self.baseline_path(name))
        if doc is None:
            return None
        matched = bool(hardware_id) and (doc.get("env") or {}).get("hardware_id") == hardware_id
        return doc, matched

    def _names(self) -> Iterator[tuple[str, str]]:
        for p in self._find("baselines"):
            rel = self._rel(p, "baselines")
            if rel.startswith("by-hardware/") or rel.split("/")[-1].startswith(".tmp-"):
                continue
            yield rel[: -len(".json")], p

    def list(self) -> list[dict[str, Any]]:
        """Every baseline: name, created, hardware id, test count, hardware copies.

        A file that cannot be read is listed with an ``error`` (its message) instead of failing
        the whole listing.
        """
        hw_by_name: dict[str, list[str]] = {}
        for p in self._find("baselines/by-hardware"):
            rel = self._rel(p, "baselines/by-hardware")
            hw, _, nm = rel.partition("/")
            hw_by_name.setdefault(nm[: -len(".json")], []).append(hw)
        out = []
        for name, path in self._names():
            entry: dict[str, Any] = {"name": name, "path": path,
                                     "hardware_ids": sorted(hw_by_name.get(name, []))}
            try:
                doc = self._read(path) or {}
                entry.update(created=doc.get("created"), saved=doc.get("saved"),
                             hardware_id=(doc.get("env") or {}).get("hardware_id"),
                             tests=len(doc.get("tests") or {}),
                             git=doc.get("git"))
            except StorageError as e:
                entry["error"] = str(e)
            out.append(entry)
        return sorted(out, key=lambda e: e["name"])

    def history(self, name: str | None = None, *, skip_invalid: bool = False) -> list[dict[str, Any]]:
        """History entries (saved runs and acceptances) in the order they were saved, optionally of one name.

        Each entry carries ``kind`` (``run`` or ``accept``) and ``_file`` (where it lives).
        """
        if name is not None:
            validate_name(name)
        out = []
        for p in self._find("history"):
            try:
                doc = self._read(p)
            except StorageError:
                if skip_invalid:
                    continue
                raise
            if doc is None or (name is not None and doc.get("name") != name):
                continue
            doc = dict(doc)
            doc.setdefault("kind", "run")
            doc["_file"] = p
            out.append(doc)
        out.sort(key=lambda d: posixpath.basename(d["_file"]))  # file names start with the save time
        return out

    def accept(self, name: str, nodeid: str, metric: str, value: float, reason: str, who: str,
               *, hardware_id: str | None = None) -> None:
        """Record that ``metric`` of ``nodeid`` at ``value`` is accepted on purpose, with a reason.

        Written into every stored copy of baseline ``name`` (or only into the copy of
        ``hardware_id`` when given) and appended to the history as an ``accept`` entry.
        """
        validate_name(name)
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("an acceptance needs a reason: say why this change is intended")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"accepted value must be a finite number, got {value!r}")
        when = _iso(_utcnow())
        record = {"value": v, "reason": reason, "who": who, "when": when}
        with self._lock(name):
            paths = []
            latest = self.baseline_path(name)
            for p in self._find("baselines/by-hardware"):
                rel = self._rel(p, "baselines/by-hardware")
                hw, _, nm = rel.partition("/")
                if nm == name + ".json" and (hardware_id is None or hw == _hardware_dir(hardware_id)):
                    paths.append(p)
            docs = {p: self._read(p) for p in paths}
            ldoc = self._read(latest)
            if ldoc is not None and (hardware_id is None
                                     or (ldoc.get("env") or {}).get("hardware_id") == hardware_id):
                docs[latest] = ldoc
            docs = {p: d for p, d in docs.items() if d is not None}
            if not docs:
                where = f" for hardware {hardware_id}" if hardware_id else ""
                raise BaselineNotFound(f"no baseline named {name!r}{where} in {self.url}; "
                                       f"save one first with --quantperf-save={name}")
            for p, d in docs.items():
                d.setdefault("accepted", {}).setdefault(nodeid, {})[metric] = record
                self._write(p, d)
            self._write(self._history_path(name), {
                "schema": SCHEMA, "kind": "accept", "name": name, "created": when, "nodeid": nodeid,
                "metric": metric, "value": v, "reason": reason, "who": who, "hardware_id": hardware_id,
            })
