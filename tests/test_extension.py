"""The public extension points: the hooks of hookspecs.py, the backend entry point group, the package face."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_run_finished_hook_sees_the_final_document(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import json

        def pytest_quantperf_run_finished(config, document):
            with open("seen.json", "w") as f:
                json.dump({"rootdir": str(config.rootpath), "doc": document}, f)
    """)
    pytester.makepyfile(test_rec="""
        def test_records(quantperf):
            quantperf.record("widgets", [3.0, 3.1, 2.9], unit="w", better="higher")

        def test_plain():
            pass
    """)
    r = pytester.runpytest_subprocess("--quantperf-save=main", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=2)
    seen = json.loads((pytester.path / "seen.json").read_text())
    doc = seen["doc"]
    assert doc["name"] == "main" and doc["schema"] == 1 and doc["env"]["hardware_id"]
    assert list(doc["tests"]) == ["test_rec.py::test_records"]
    assert doc["tests"]["test_rec.py::test_records"]["metrics"]["widgets"]["samples"] == [3.0, 3.1, 2.9]
    # the document the hook saw is the one that was saved
    saved = json.loads((pytester.path / ".quantperf" / "baselines" / "main.json").read_text())
    assert saved["tests"]["test_rec.py::test_records"]["metrics"]["widgets"]["value"] == 3.0


def test_run_finished_is_not_called_for_a_run_without_quantperf(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        def pytest_quantperf_run_finished(config, document):
            open("called", "w").close()
    """)
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not (pytester.path / "called").exists()


def test_extra_metrics_hook_is_collected_and_checked(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        def pytest_quantperf_extra_metrics(nodeid, measurement, lm, result):
            if measurement != "generate":
                return None
            return {"joules": {"value": 1.5, "unit": "J"}, "hits": [1, 2, 3]}
    """)
    pytester.makepyfile(test_hook="""
        import pytest
        from pytest_quantperf.plugin import SESSION_KEY

        def test_helper(request):
            qs = request.config.stash[SESSION_KEY]
            got = {m.name: m for m in qs.extra_metrics(request.node.nodeid, "generate", None, None)}
            assert set(got) == {"joules", "hits"}
            assert got["joules"].samples == (1.5,) and got["joules"].unit == "J" and got["joules"].better == "lower"
            assert got["hits"].samples == (1.0, 2.0, 3.0)
            assert qs.extra_metrics(request.node.nodeid, "perplexity", None, None) == []
    """)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_extra_metrics_refuses_a_malformed_return() -> None:
    from pytest_quantperf.session import QuantperfSession, Settings

    qs = QuantperfSession(Settings())
    assert qs.extra_metrics("t", "generate", None, None) == []  # no pytest: no hooks
    for bad, match in (({"x y": 1}, "not an identifier"), ({"a": "fast"}, "not a finite number"),
                       ({"a": {"value": 1, "better": "up"}}, "better='up'"), (3, "not a mapping"),
                       ({"a": {"valu": 1}}, "unknown keys")):
        qs.extra_metrics_hook = lambda **kw: [bad]
        with pytest.raises(ValueError, match=match):
            qs.extra_metrics("t", "generate", None, None)


def test_builtin_backends_are_registered_in_pyproject() -> None:
    import tomllib

    from pytest_quantperf.backends import BUILTIN, ENTRY_POINT_GROUP, get_backend

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][ENTRY_POINT_GROUP] == BUILTIN
    for name in BUILTIN:
        assert get_backend(name).name == name
    with pytest.raises(ValueError, match="unknown backend 'vllm'"):
        get_backend("vllm")


BACKEND_PACKAGE = '''
import time
from pytest_quantperf.backends import BackendInfo, RunTiming
from pytest_quantperf.models import LoadedModel, ModelSpec

class Tok:
    def encode(self, text):
        return list(text.encode())

    def decode(self, ids, skip_special_tokens=True):
        return "x" * len(ids)

class Runner:
    name = "sleepy"

    def __init__(self, lm):
        self.lm = lm

    def prepare(self, prompts):
        return [self.lm.tokenizer.encode(p) for p in prompts]

    def prompt_tokens(self, prepared):
        return max(len(p) for p in prepared)

    def run(self, prepared, max_new_tokens):
        t0 = time.perf_counter()
        time.sleep(0.002)
        t1 = time.perf_counter()
        time.sleep(0.001 * (max_new_tokens - 1))
        return RunTiming(start=t0, first_token=t1, end=time.perf_counter(), new_tokens=max_new_tokens,
                         batch=len(prepared), text="x" * max_new_tokens)

def load(model, *, default_model=None, reference=False, progress=None, delay_ms=1):
    spec = ModelSpec(model=model, quant="sleepy", device="cpu", load_kwargs=(("backend", "sleepy"),))
    return LoadedModel(model=object(), tokenizer=Tok(), spec=spec, device="cpu", load_s=0.0,
                       footprint_bytes=1 << 20, disk_bytes=0, source=model, reference=reference, backend="sleepy")

BACKEND = BackendInfo(name="sleepy", runner=Runner, load=load)
'''


def test_a_backend_from_another_package_is_found_and_measured(pytester: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    site = pytester.mkdir("site")
    (site / "sleepy_backend.py").write_text(BACKEND_PACKAGE)
    info = site / "sleepy_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sleepy-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pytest_quantperf.backends]\nsleepy = sleepy_backend:BACKEND\n")
    monkeypatch.setenv("PYTHONPATH", f"{site}:{':'.join(sys.path)}")
    pytester.makepyfile(test_sleepy=textwrap.dedent("""
        from pytest_quantperf.backends import backend_names

        def test_generate(quant_model, quantperf):
            assert "sleepy" in backend_names()
            lm = quant_model("anything", backend="sleepy")
            assert lm.backend == "sleepy" and quant_model("anything", backend="sleepy") is lm
            r = quantperf.generate(lm, "hello", max_new_tokens=5)
            assert r.new_tokens == 5
            assert quantperf.results["tokens_per_s"].value > 0
    """))
    r = pytester.runpytest_subprocess("--quantperf-repeat=3", "--quantperf-warmup=0", "--quantperf-json=out.json",
                                      "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "out.json").read_text())
    metrics = doc["tests"]["test_sleepy.py::test_generate"]["metrics"]
    assert len(metrics["latency_ms"]["samples"]) == 3 and 5 < metrics["latency_ms"]["value"] < 1000


def test_package_face_is_lazy_and_public() -> None:
    import subprocess

    code = ("import sys, pytest_quantperf as q; assert 'pytest_quantperf.results' not in sys.modules; "
            "v = q.__version__; m = q.Metric; e = q.ModelError; b = q.BackendInfo; "
            "assert q.Metric.__module__ == 'pytest_quantperf.results' and v and not v.startswith('0+'); "
            "assert issubclass(q.QuantMismatchError, q.ModelError); "
            "assert not {'numpy', 'torch', 'scipy'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (ROOT / "src" / "pytest_quantperf" / "py.typed").is_file()
