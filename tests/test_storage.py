"""Baselines and history: round trips, shard merges, corrupt files, concurrency, object stores."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as hs

from pytest_quantperf.verdicts.compare import compare_runs
from pytest_quantperf.results import SCHEMA, make_metric
from pytest_quantperf.store.names import validate_name
from pytest_quantperf.store.schema import StorageError, validate_doc
from pytest_quantperf.store.storage import BaselineNotFound, Storage


def run_doc(tests: dict[str, float], hw: str = "cpu-test-2c", name: str | None = None) -> dict:
    return {
        "schema": SCHEMA, "name": name, "created": "2026-11-25T03:30:00Z",
        "env": {"hardware_id": hw, "python": "3.11.7"},
        "git": {"commit": "abc", "branch": "main", "dirty": False},
        "options": {"repeat": "auto"},
        "tests": {nid: {"nodeid": nid, "outcome": "passed",
                        "metrics": {"vram_mb": make_metric("vram_mb", v).to_dict(),
                                    "latency_ms": make_metric("latency_ms", [v, v + 1, v + 2]).to_dict()}}
                  for nid, v in tests.items()},
    }


# ---- names -------------------------------------------------------------------------------
@pytest.mark.parametrize("good", ["main", "release/1.2", "pr-17_x", "a.b/c-d/e_f"])
def test_valid_names(good):
    assert validate_name(good) == good


@pytest.mark.parametrize("bad,why", [
    ("", "empty"), ("../x", "'..'"), ("a/../b", "'..'"), ("/abs", "absolute"), ("a//b", "empty segment"),
    ("a/", "empty segment"), ("./a", "'.'"), ("has space", "other characters"), ("by-hardware/x", "reserved"),
    ("C:/x", "absolute"), ("a\\b", "other characters"),
])
def test_invalid_names_are_refused(tmp_path, bad, why):
    with pytest.raises(ValueError, match="invalid baseline name") as e:
        validate_name(bad)
    assert why in str(e.value)
    with pytest.raises(ValueError):
        Storage(str(tmp_path)).save(bad, run_doc({"t::a": 1.0}))
    assert not (tmp_path / "baselines").exists() or not any((tmp_path / "baselines").rglob("*.json"))


# ---- round trips and merging -------------------------------------------------------------
def test_save_load_round_trip_and_layout(tmp_path):
    st = Storage(str(tmp_path / "store"))
    doc = run_doc({"t.py::test_a": 100.0})
    saved = st.save("main", doc)
    loaded, matched = st.load("main", "cpu-test-2c")
    assert matched and loaded == saved
    assert loaded["tests"] == doc["tests"] and loaded["name"] == "main"
    assert (tmp_path / "store/baselines/main.json").is_file()
    assert (tmp_path / "store/baselines/by-hardware/cpu-test-2c/main.json").is_file()
    hist = list((tmp_path / "store/history").iterdir())
    assert len(hist) == 1 and hist[0].name.endswith("_main.json")
    text = (tmp_path / "store/baselines/main.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    # nested names and other hardware
    st.save("release/1.2", run_doc({"t::b": 1.0}, hw="cuda-nvidia-a10g"))
    assert (tmp_path / "store/baselines/release/1.2.json").is_file()
    assert any("release__1.2" in p.name for p in (tmp_path / "store/history").iterdir())
    assert st.load("release/1.2", "cpu-test-2c")[1] is False
    assert st.load("nothing") is None
    names = {e["name"]: e for e in st.list()}
    assert set(names) == {"main", "release/1.2"}
    assert names["main"]["tests"] == 1 and names["main"]["hardware_id"] == "cpu-test-2c"
    assert names["main"]["hardware_ids"] == ["cpu-test-2c"] and names["main"]["created"]
    # the loaded documents feed the comparison directly
    comp = compare_runs(loaded, run_doc({"t.py::test_a": 100.0}), {})
    assert comp.same_hardware and comp.counts["regression"] == 0


def test_merge_of_two_shards_and_per_hardware_copies(tmp_path):
    st = Storage(str(tmp_path))
    st.save("main", run_doc({"t::a": 1.0, "t::b": 2.0}))
    st.save("main", run_doc({"t::b": 20.0, "t::c": 3.0}))
    doc, matched = st.load("main", "cpu-test-2c")
    assert matched and set(doc["tests"]) == {"t::a", "t::b", "t::c"}
    assert doc["tests"]["t::b"]["metrics"]["vram_mb"]["value"] == 20.0  # replaced by the newer shard
    # another machine's save does not mix into this one's baseline
    st.save("main", run_doc({"t::a": 9.0}, hw="cuda-nvidia-h100-80gb-hbm3"))
    h100, m = st.load("main", "cuda-nvidia-h100-80gb-hbm3")
    assert m and set(h100["tests"]) == {"t::a"}
    cpu, m = st.load("main", "cpu-test-2c")
    assert m and set(cpu["tests"]) == {"t::a", "t::b", "t::c"}
    latest, m = st.load("main", "cpu-unknown-8c")
    assert not m and latest["env"]["hardware_id"] == "cuda-nvidia-h100-80gb-hbm3"
    assert len(st.history("main")) == 3


def test_accept_is_recorded_kept_across_saves_and_used(tmp_path):
    st = Storage(str(tmp_path))
    st.save("main", run_doc({"t::a": 1000.0}))
    st.accept("main", "t::a", "vram_mb", 1200.0, "bigger KV cache on purpose", "ana")
    doc, _ = st.load("main", "cpu-test-2c")
    rec = doc["accepted"]["t::a"]["vram_mb"]
    assert rec["value"] == 1200.0 and rec["reason"] == "bigger KV cache on purpose" and rec["who"] == "ana"
    st.save("main", run_doc({"t::z": 1.0}))  # another shard keeps the record
    doc, _ = st.load("main", "cpu-test-2c")
    assert doc["accepted"]["t::a"]["vram_mb"]["value"] == 1200.0
    kinds = [h["kind"] for h in st.history("main")]
    assert kinds == ["run", "accept", "run"]
    comp = compare_runs(doc, run_doc({"t::a": 1150.0}), {})
    v, = [v for v in comp.verdicts if v.metric == "vram_mb"]
    assert v.status == "regression" and not v.gating and [r.key for r in v.reasons] == ["accepted"]
    with pytest.raises(BaselineNotFound, match="--quantperf-save=other"):
        st.accept("other", "t::a", "vram_mb", 1.0, "why", "me")
    with pytest.raises(ValueError, match="reason"):
        st.accept("main", "t::a", "vram_mb", 1.0, "  ", "me")


# ---- bad files ---------------------------------------------------------------------------
def test_corrupt_file_is_refused_and_left_untouched(tmp_path):
    st = Storage(str(tmp_path))
    st.save("main", run_doc({"t::a": 1.0}))
    path = tmp_path / "baselines/by-hardware/cpu-test-2c/main.json"
    bad = path.read_bytes()[:-40]
    path.write_bytes(bad)
    with pytest.raises(StorageError) as e:
        st.load("main", "cpu-test-2c")
    assert str(path) in str(e.value) and "not valid JSON" in str(e.value) and "save the baseline again" in str(e.value)
    assert path.read_bytes() == bad
    # a save onto a corrupt baseline fails before writing anything
    n_hist = len(list((tmp_path / "history").iterdir()))
    with pytest.raises(StorageError):
        st.save("main", run_doc({"t::b": 2.0}))
    assert path.read_bytes() == bad
    assert len(list((tmp_path / "history").iterdir())) == n_hist
    assert "error" not in st.list()[0]  # the latest copy is still fine
    latest = tmp_path / "baselines/main.json"
    latest.write_bytes(b"\xff\xfe")
    entry = st.list()[0]
    assert entry["name"] == "main" and str(latest) in entry["error"]
    assert latest.read_bytes() == b"\xff\xfe"


def test_newer_schema_and_wrong_shapes_are_refused(tmp_path):
    st = Storage(str(tmp_path))
    st.save("main", run_doc({"t::a": 1.0}))
    path = tmp_path / "baselines/main.json"
    doc = json.loads(path.read_text())
    doc["schema"] = SCHEMA + 1
    path.write_text(json.dumps(doc))
    before = path.read_bytes()
    with pytest.raises(StorageError, match="newer pytest-quantperf") as e:
        st.load("main")
    assert str(path) in str(e.value) and "upgrade" in str(e.value)
    assert path.read_bytes() == before
    for bad in ({"schema": "1", "tests": {}}, {"schema": 1.0, "tests": {}}, {"schema": True, "tests": {}},
                {"schema": 1, "tests": []}, {"schema": 1, "tests": {"x": {"metrics": {"m": {"value": "1"}}}}},
                {"schema": 1, "tests": {"x": {"metrics": {"m": {"value": 1, "samples": [1, None]}}}}},
                {"schema": 1, "tests": {}, "accepted": {"x": {"m": {"reason": "no value"}}}}, [1, 2]):
        with pytest.raises(StorageError, match="main.json"):
            validate_doc(bad, str(path))
    with pytest.raises(StorageError):
        st.save("other", {"schema": 1, "tests": {"x": {"metrics": {"m": {"value": "fast"}}}}})


_json = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False, allow_infinity=False) | hs.text(max_size=5),
    lambda children: hs.lists(children, max_size=4) | hs.dictionaries(
        hs.sampled_from(["schema", "tests", "metrics", "value", "samples", "env", "hardware_id", "accepted",
                         "name", "items", "better", "flags", "extra", "x"]) | hs.text(max_size=3),
        children, max_size=5),
    max_leaves=25,
)
_near_doc = hs.fixed_dictionaries({
    "schema": hs.sampled_from([0, 1, 2, "1", 1.0, None]),
    "tests": hs.dictionaries(hs.text(max_size=3), hs.fixed_dictionaries(
        {"metrics": hs.dictionaries(hs.text(max_size=3), hs.fixed_dictionaries(
            {"value": hs.floats() | hs.integers() | hs.none() | hs.text(max_size=2),
             "samples": hs.lists(hs.floats(allow_nan=False) | hs.none(), max_size=3),
             "better": hs.sampled_from(["lower", "higher", "none", "up"])}), max_size=2)}), max_size=2),
}, optional={"env": _json, "accepted": _json, "name": _json})


@given(doc=_json | _near_doc)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_reader_on_arbitrary_json_returns_valid_doc_or_storage_error(tmp_path, doc):
    st = Storage(str(tmp_path))
    path = tmp_path / "baselines" / "main.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(doc).encode()
    path.write_bytes(raw)
    try:
        got = st.load("main")
    except StorageError as e:
        assert str(path) in str(e)
        assert path.read_bytes() == raw
        return
    assert got is not None
    loaded, _ = got
    # a document the reader accepts is usable by the comparison, which must not crash
    compare_runs(loaded, loaded, {})


@given(hs.binary(max_size=60))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_reader_on_arbitrary_bytes(tmp_path, raw):
    path = tmp_path / "baselines" / "main.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    try:
        Storage(str(tmp_path)).load("main")
    except StorageError:
        pass
    assert path.read_bytes() == raw


# ---- concurrency -------------------------------------------------------------------------
def _saver(root: str, worker: int, count: int) -> None:
    st = Storage(root)
    for i in range(count):
        st.save("main", run_doc({f"t.py::test_{worker}_{i}": float(i)}))


def test_two_processes_saving_concurrently_keep_everything(tmp_path):
    root = str(tmp_path / "shared")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_saver, args=(root, w, 20)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    st = Storage(root)
    doc, matched = st.load("main", "cpu-test-2c")
    assert matched
    assert set(doc["tests"]) == {f"t.py::test_{w}_{i}" for w in range(2) for i in range(20)}
    json.loads((tmp_path / "shared/baselines/main.json").read_text())
    hist = st.history("main")
    assert len(hist) == 40 and len({h["_file"] for h in hist}) == 40
    assert not [p for p in (tmp_path / "shared").rglob(".tmp-*")]


def test_same_second_saves_get_distinct_history_files(tmp_path):
    st = Storage(str(tmp_path))
    for i in range(5):
        st.save("main", run_doc({f"t::{i}": 1.0}))
    assert len(list((tmp_path / "history").iterdir())) == 5
    created = [h["created"] for h in st.history()]
    assert created == sorted(created)


# ---- other filesystems -------------------------------------------------------------------
def test_memory_filesystem_round_trip():
    url = f"memory://quantperf-{uuid.uuid4().hex}"
    st = Storage(url)
    st.save("main", run_doc({"t::a": 1.0}))
    st.save("main", run_doc({"t::b": 2.0}))
    st.save("nightly/x", run_doc({"t::c": 3.0}, hw="cuda-x"))
    doc, matched = st.load("main", "cpu-test-2c")
    assert matched and set(doc["tests"]) == {"t::a", "t::b"}
    assert [e["name"] for e in Storage(url).list()] == ["main", "nightly/x"]
    assert len(st.history()) == 3 and len(st.history("main")) == 2
    st.accept("main", "t::a", "vram_mb", 2.0, "ok", "me")
    assert st.load("main")[0]["accepted"]["t::a"]["vram_mb"]["reason"] == "ok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_s3_round_trip_through_moto(s3_server):
    import s3fs

    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server}}
    fs = s3fs.S3FileSystem(**opts)
    fs.mkdir("qp-bucket")
    st = Storage("s3://qp-bucket/perf", **opts)
    st.save("main", run_doc({"t::a": 1.0}))
    st.save("main", run_doc({"t::b": 2.0}))
    fresh = Storage("s3://qp-bucket/perf", **opts)
    doc, matched = fresh.load("main", "cpu-test-2c")
    assert matched and set(doc["tests"]) == {"t::a", "t::b"}
    assert fresh.list()[0]["name"] == "main" and fresh.list()[0]["tests"] == 2
    assert len(fresh.history("main")) == 2
    assert fs.exists("qp-bucket/perf/baselines/by-hardware/cpu-test-2c/main.json")
    fs.pipe_file("qp-bucket/perf/baselines/broken.json", b"{not json")
    with pytest.raises(StorageError, match="broken.json"):
        fresh.load("broken")
    assert fs.cat_file("qp-bucket/perf/baselines/broken.json") == b"{not json"


def test_the_one_atomic_writer(tmp_path):
    """Storage and the reports share _util.io.write_atomic: whole files, plain-open permissions, no
    temporary file left behind when the write fails."""
    from pytest_quantperf import report
    from pytest_quantperf._util.io import write_atomic

    from pytest_quantperf.store import storage

    assert report.write_atomic is write_atomic and storage.write_atomic is write_atomic
    st = Storage(str(tmp_path / "store"))
    st.save("main", run_doc({"t::a": 1.0}))
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "store/baselines/main.json").stat().st_mode & 0o777 == 0o666 & ~mask
    write_atomic(str(tmp_path / "sub/r.txt"), "é")
    write_atomic(str(tmp_path / "sub/r.bin"), b"\x00\x01", durable=True)
    assert (tmp_path / "sub/r.txt").read_text(encoding="utf-8") == "é"
    assert (tmp_path / "sub/r.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(IsADirectoryError):
        write_atomic(str(tmp_path / "sub"), "x")  # the rename onto a directory fails
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["r.bin", "r.txt"]
