"""pytest-quantperf: performance, memory and accuracy budgets for quantized LLMs, gated on baselines.

The public names below are imported on first use (module ``__getattr__``), so importing the
package, which pytest does for every run where the plugin is installed, stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_PUBLIC: dict[str, str] = {
    "Metric": "results",
    "TestResult": "results",
    "METRICS": "results",
    "ModelSpec": "models",
    "LoadedModel": "models",
    "Tolerance": "verdicts.tolerance",
    "parse_tolerance": "verdicts.tolerance",
    "parse_tolerance_spec": "verdicts.tolerance",
    "Verdict": "verdicts.compare",
    "Storage": "store.storage",
    "StorageError": "store.schema",
    "ModelError": "errors",
    "QuantMismatchError": "errors",
    "MeasurementError": "errors",
    "BackendUnavailable": "errors",
    "Backend": "backends",
    "BackendInfo": "backends",
    "RunTiming": "backends",
    "ExtraMetric": "session",
    "QuantperfWarning": "plugin",
    "load_runs": "store.runs",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("pytest-quantperf")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
