"""backends: one model file, three inference backends, one table.

``backend_model(name)`` gives the default model's weights through ``transformers`` (fp32, the
GGUF file dequantized once into safetensors), ``llama_cpp`` (the GGUF file itself) or ``mlx``
(the same safetensors). Backends whose package does not import are skipped, with the reason.
``--quantperf-model=FILE.gguf`` runs the comparison on another GGUF file.
"""
from __future__ import annotations

import time

import pytest

from pytest_quantperf import backends
from pytest_quantperf.backends.llama_cpp import load_gguf
from pytest_quantperf.backends.mlx import load_mlx
from pytest_quantperf.suite import markdown_table

ROWS = pytest.StashKey[dict]()
HANDLES = pytest.StashKey[dict]()


@pytest.fixture
def backend_model(pytestconfig: pytest.Config, quant_model):
    handles = pytestconfig.stash.setdefault(HANDLES, {})
    other = pytestconfig.getoption("quantperf_model")

    def get(name: str):
        if name == "transformers":
            return quant_model("default", quant="fp32")
        reason = backends.unavailable_reason(name)
        if reason:
            pytest.skip(reason)
        if name not in handles:
            if name == "llama_cpp":
                if other and not str(other).endswith(".gguf"):
                    pytest.skip(f"llama.cpp needs a .gguf file; --quantperf-model={other} is not one")
                handles[name] = load_gguf("default", default_model=other)
            else:
                handles[name] = load_mlx("default", default_model=other)
        return handles[name]

    return get


@pytest.fixture
def cpu_meter():
    """``with cpu_meter() as m: ...`` → ``m.percent``: process CPU time / wall time, % of one core."""
    import psutil

    class Meter:
        percent = 0.0

        def __enter__(self):
            t = psutil.Process().cpu_times()
            self.c0, self.t0 = t.user + t.system, time.perf_counter()
            return self

        def __exit__(self, *exc):
            t = psutil.Process().cpu_times()
            self.percent = 100.0 * (t.user + t.system - self.c0) / (time.perf_counter() - self.t0)

    return Meter


@pytest.fixture
def table(pytestconfig: pytest.Config) -> dict:
    return pytestconfig.stash.setdefault(ROWS, {})


@pytest.fixture
def reference_ids(pytestconfig: pytest.Config, quant_model):
    """transformers fp32 greedy token ids for (prompt, n): what every backend is compared with."""
    from pytest_quantperf.backends import backend_for

    store = pytestconfig.stash.setdefault(_REF, {})

    def get(prompt: str, n: int) -> tuple[int, ...]:
        if (prompt, n) not in store:
            b = backend_for(quant_model("default", quant="fp32"))
            store[(prompt, n)] = b.run(b.prepare([prompt]), n).output_ids
        return store[(prompt, n)]

    return get


_REF = pytest.StashKey[dict]()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, None)
    if not rows:
        return
    terminalreporter.write_sep("=", "backends")
    terminalreporter.write_line(markdown_table(rows, "backend"))
