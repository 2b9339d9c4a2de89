"""Generation backends behind ``quantperf.generate``.

A backend is one small protocol: turn prompts into inputs once, then run one greedy generation of
exactly ``max_new_tokens`` new tokens and say when it started, when the first token existed and
when it ended. Timing, repeats, memory and budgets stay in :mod:`pytest_quantperf.measure.generate`, so a
new backend (llama.cpp, MLX, ...) gets all of them for free.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class RunTiming:
    """One generation: perf_counter timestamps and what came out."""

    start: float
    first_token: float
    end: float
    new_tokens: int  # per sequence
    batch: int
    text: str = ""
    output_ids: tuple[int, ...] = ()


def _always_available() -> str | None:
    return None


@runtime_checkable
class Backend(Protocol):
    name: str

    def prepare(self, prompts: Sequence[str]) -> Any:
        """Tokenize once, outside the timed region."""

    def run(self, prepared: Any, max_new_tokens: int) -> RunTiming:
        """One greedy generation of exactly ``max_new_tokens`` tokens (EOS must not stop it)."""

    def prompt_tokens(self, prepared: Any) -> int:
        """Prompt length in tokens (per sequence, the longest)."""


@dataclass(frozen=True)
class BackendInfo:
    """What a backend package registers under the entry point group ``pytest_quantperf.backends``.

    ``runner(lm)`` makes the :class:`Backend` that drives a loaded handle; ``load(model, *,
    default_model, reference, progress, **kwargs)`` returns a
    :class:`~pytest_quantperf.models.LoadedModel` with ``backend=name`` (what
    ``quant_model(model, backend=name, **kwargs)`` calls; None for transformers, which the plugin
    loads through its own cache); ``unavailable()`` says why it cannot run here (a skip reason:
    the package to install), or None. A new backend is a package with one entry point::

        [project.entry-points."pytest_quantperf.backends"]
        onnx = "my_package.quantperf_backend:BACKEND"
    """

    name: str
    runner: Callable[[Any], Backend]
    load: Callable[..., Any] | None = None
    unavailable: Callable[[], str | None] = _always_available


ENTRY_POINT_GROUP = "pytest_quantperf.backends"

# The built-in backends, exactly as pyproject.toml registers them (a test holds the two equal).
# Looked up here first so the common case needs no scan of every installed distribution, and so a
# source checkout whose installed metadata predates a backend still finds it; another package
# cannot take over a built-in name.
BUILTIN: dict[str, str] = {
    "transformers": "pytest_quantperf.backends.transformers:BACKEND",
    "llama_cpp": "pytest_quantperf.backends.llama_cpp:BACKEND",
    "mlx": "pytest_quantperf.backends.mlx:BACKEND",
}


def available(backend: str) -> bool:
    """Whether a backend's package imports here (no import is done: find_spec only)."""
    from ..errors import ModelError

    if backend == "transformers":
        return importlib.util.find_spec("transformers") is not None
    if backend == "llama_cpp":
        return importlib.util.find_spec("llama_cpp") is not None
    if backend == "mlx":
        return importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None
    raise ModelError(f"unknown backend {backend!r}: use one of transformers, llama_cpp, mlx")


def unavailable_reason(backend: str) -> str | None:
    """Why a backend cannot run here (None when it can): the text a skip shows."""
    if available(backend):
        if backend == "mlx":
            try:
                import mlx.core  # noqa: F401
            except Exception as e:  # an mlx wheel without a usable device backend
                return f"mlx is installed but does not import ({type(e).__name__}: {e})"
        return None
    if backend == "llama_cpp":
        return ("llama-cpp-python is not installed: pip install 'pytest-quantperf[gguf]' "
                "(it builds llama.cpp from source: about 4-8 minutes on 2 cores)")
    if backend == "mlx":
        return ("mlx / mlx-lm are not installed: pip install 'pytest-quantperf[mlx]' (Apple Silicon; "
                "on Linux 'mlx[cpu]' gives a CPU build)")
    return f"{backend} is not installed"


def _resolve(value: str) -> Any:
    import importlib

    module, _, attr = value.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def backend_names() -> list[str]:
    """Every backend this environment offers: the built-in ones, then those of other packages."""
    from importlib.metadata import entry_points

    names = list(BUILTIN)
    names += sorted({e.name for e in entry_points(group=ENTRY_POINT_GROUP)} - set(BUILTIN))
    return names


def get_backend(name: str) -> BackendInfo:
    """The registered backend called ``name``; ValueError naming the known ones otherwise."""
    if name in BUILTIN:
        info = _resolve(BUILTIN[name])
    else:
        from importlib.metadata import entry_points

        found = list(entry_points(group=ENTRY_POINT_GROUP, name=name))
        if not found:
            raise ValueError(f"unknown backend {name!r}: use one of {', '.join(backend_names())} (a package adds "
                             f"one through the entry point group {ENTRY_POINT_GROUP!r})")
        values = sorted({e.value for e in found})
        if len(values) > 1:
            raise ValueError(f"backend {name!r} is registered by more than one package ({', '.join(values)}): "
                             "uninstall one of them")
        try:
            info = found[0].load()
        except Exception as e:
            raise ValueError(f"backend {name!r} ({values[0]}) does not import: {type(e).__name__}: {e}") from e
    if not isinstance(info, BackendInfo) or info.name != name:
        raise ValueError(f"the entry point of backend {name!r} must name a BackendInfo(name={name!r}, ...); "
                         f"it names {info!r}")
    return info


def backend_for(lm: Any) -> Backend:
    """The backend that drives a loaded model handle."""
    return get_backend(getattr(lm, "backend", "transformers")).runner(lm)


def load_with_backend(name: str, model: str = "default", *, default_model: str | None = None,
                      reference: bool = False, progress: Callable[[str], None] | None = None,
                      **kwargs: Any) -> Any:
    """What ``quant_model(model, backend=name, **kwargs)`` calls for a backend other than transformers.

    Raises :class:`~pytest_quantperf.errors.BackendUnavailable` (the plugin skips the test with
    its message) when the backend says it cannot run here, and ModelError for an unknown name.
    """
    from ..errors import BackendUnavailable, ModelError

    try:
        info = get_backend(name)
    except ValueError as e:
        raise ModelError(str(e)) from None
    if info.load is None:
        raise ModelError(f"backend {name!r} is loaded by quant_model itself (quant=..., not backend=...)")
    reason = info.unavailable()
    if reason:
        raise BackendUnavailable(reason)
    return info.load(model, default_model=default_model, reference=reference, progress=progress, **kwargs)
