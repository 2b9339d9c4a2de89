"""Model handles for the non-transformers backends: GGUF files through llama.cpp, and MLX.

Both return the same :class:`~pytest_quantperf.models.LoadedModel` the fixtures hand out, with
``backend`` set, so ``quantperf.generate`` and every budget work on them unchanged. The spec's
``quant`` names what the weights really are: the GGUF file type (``q4_1``, ``q8_0``, ``f16`` ...)
for llama.cpp, ``mlx-<dtype>`` or ``mlx-q<bits>`` for MLX. Those names are outside
``models.QUANTS`` on purpose: calling a Q4_1 file "fp32" would lie in every report, and the
names keep a GGUF handle's metric keys apart from the same weights loaded through transformers.
The backend and its settings ride in ``spec.load_kwargs`` (``backend=...``), so specs stay
hashable cache keys and the run document says how the model was loaded.

Kept free of pytest; ``llama_cpp`` and ``mlx`` are imported inside functions (optional extras).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import BackendUnavailable, ModelError
from .models import LoadedModel, ModelSpec
from .sources import default_gguf_path, gguf_to_safetensors

MLX_BITS = (2, 3, 4, 6, 8)


def available(backend: str) -> bool:
    """Whether a backend's package imports here (no import is done: find_spec only)."""
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


def _cpu_count() -> int:
    with contextlib.suppress(AttributeError, OSError):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


# --------------------------------------------------------------------------- GGUF via llama.cpp

def gguf_type_name(file_type: int | str | None) -> str:
    """``general.file_type`` of a GGUF file → a short lower-case name: 3 → ``q4_1``, 1 → ``f16``."""
    if file_type is None or file_type == "":
        return "gguf"
    try:
        import gguf

        name = gguf.LlamaFileType(int(file_type)).name
    except Exception:
        return f"gguf-type{file_type}"
    name = name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    return name


@dataclass(frozen=True)
class GgufSummary:
    """What a GGUF handle holds, in the place a transformers handle keeps its QuantSummary."""

    quant: str
    file_type: str
    params_total: int
    model_bytes: int
    file_bytes: int
    n_ctx: int
    n_threads: int
    n_gpu_layers: int
    backend: str = "llama_cpp"

    @property
    def bits_per_param(self) -> float:
        return self.model_bytes * 8 / self.params_total if self.params_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "quant": self.quant, "file_type": self.file_type,
                "params_total": self.params_total, "model_bytes": self.model_bytes,
                "file_bytes": self.file_bytes, "bits_per_param": round(self.bits_per_param, 3),
                "n_ctx": self.n_ctx, "n_threads": self.n_threads, "n_gpu_layers": self.n_gpu_layers}


class GgufTokenizer:
    """The llama.cpp vocabulary behind the small part of the tokenizer API quantperf uses."""

    def __init__(self, llama: Any):
        self.llama = llama
        self.eos_token_id = int(llama.token_eos())
        self.bos_token_id = int(llama.token_bos())
        self.pad_token_id = self.eos_token_id

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        # add_bos follows the file's tokenizer.ggml.add_bos_token, as transformers does;
        # special=True parses <|im_start|> and friends as the special tokens they are
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.llama.detokenize(list(int(i) for i in ids), special=not skip_special_tokens).decode(
            "utf-8", errors="replace")

    def __call__(self, text: str | list[str], **_: Any) -> dict[str, list[list[int]]]:
        batch = [text] if isinstance(text, str) else list(text)
        return {"input_ids": [self.encode(t) for t in batch]}


@dataclass
class GgufModel:
    """The llama.cpp model of a handle."""

    llama: Any
    path: str
    n_ctx: int
    n_threads: int
    n_gpu_layers: int

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llama.close()


def _gguf_path(path: str | os.PathLike, default_model: str | None = None) -> Path:
    name = str(path)
    if name == "default":
        if default_model and default_model != "default":
            name = default_model
        else:
            return default_gguf_path()
    if name in ("smollm2-135m-instruct",):
        return default_gguf_path()
    p = Path(name).expanduser()
    if p.suffix != ".gguf":
        raise ModelError(f"the llama_cpp backend loads .gguf files, not {name!r}: pass the path of a .gguf file "
                         "(or 'default' for the default model's GGUF file)")
    if not p.is_file():
        raise ModelError(f"GGUF file {name!r} does not exist")
    return p.resolve()


def gguf_spec(path: str | os.PathLike = "default", *, n_ctx: int = 2048, n_threads: int | None = None,
              n_gpu_layers: int = 0, default_model: str | None = None, file_type: str | None = None) -> ModelSpec:
    """The spec of a GGUF handle (a session-cache key); ``file_type`` is filled in by the load."""
    p = _gguf_path(path, default_model)
    if n_ctx < 16:
        raise ModelError(f"n_ctx must be at least 16, got {n_ctx}")
    threads = int(n_threads) if n_threads else _cpu_count()
    if threads < 1:
        raise ModelError(f"n_threads must be at least 1, got {n_threads}")
    return ModelSpec(model=str(p), quant=file_type or "gguf", device=_gguf_device(n_gpu_layers),
                     load_kwargs=(("backend", "llama_cpp"), ("n_ctx", int(n_ctx)),
                                  ("n_gpu_layers", int(n_gpu_layers)), ("n_threads", threads)))


def _gguf_device(n_gpu_layers: int) -> str:
    # llama.cpp allocates outside torch: a "cuda..." device would make measure read torch's (empty)
    # CUDA counters. With layers offloaded the host RSS and the GPU's own tools tell the memory.
    return "cpu" if not n_gpu_layers else "llama_cpp-gpu"


def load_gguf(path: str | os.PathLike = "default", n_ctx: int = 2048, n_threads: int | None = None,
              n_gpu_layers: int = 0, *, default_model: str | None = None, reference: bool = False,
              **llama_kwargs: Any) -> LoadedModel:
    """Load a GGUF file with llama.cpp: a handle ``quantperf.generate`` drives with the llama_cpp backend.

    ``n_threads`` defaults to every core this process may use (llama.cpp's own default is half
    of them, which would make a comparison with torch unfair). The footprint is the tensor bytes
    llama.cpp reports for the model; the size on disk is the file size.
    """
    reason = unavailable_reason("llama_cpp")
    if reason:
        raise BackendUnavailable(reason)
    from llama_cpp import Llama, llama_model_n_params, llama_model_size

    spec0 = gguf_spec(path, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                      default_model=default_model)
    kw = dict(spec0.load_kwargs)
    file = Path(spec0.model)
    t0 = time.perf_counter()
    try:
        llama = Llama(str(file), n_ctx=kw["n_ctx"], n_threads=kw["n_threads"], n_threads_batch=kw["n_threads"],
                      n_gpu_layers=kw["n_gpu_layers"], verbose=False, **llama_kwargs)
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"llama.cpp could not load {file}: {e}. Is it a GGUF model file of an architecture "
                         "this llama-cpp-python version supports?") from e
    load_s = time.perf_counter() - t0
    file_type = gguf_type_name((llama.metadata or {}).get("general.file_type"))
    spec = ModelSpec(**{**spec0.__dict__, "quant": file_type})
    model_bytes = int(llama_model_size(llama.model))
    summary = GgufSummary(quant=file_type, file_type=str((llama.metadata or {}).get("general.file_type", "")),
                          params_total=int(llama_model_n_params(llama.model)), model_bytes=model_bytes,
                          file_bytes=file.stat().st_size, n_ctx=kw["n_ctx"], n_threads=kw["n_threads"],
                          n_gpu_layers=kw["n_gpu_layers"])
    handle = GgufModel(llama=llama, path=str(file), n_ctx=kw["n_ctx"], n_threads=kw["n_threads"],
                       n_gpu_layers=kw["n_gpu_layers"])
    return LoadedModel(model=handle, tokenizer=GgufTokenizer(llama), spec=spec, device=spec.device, load_s=load_s,
                       footprint_bytes=model_bytes, disk_bytes=file.stat().st_size, quant_summary=summary,
                       source=str(file), reference=reference, backend="llama_cpp")


# --------------------------------------------------------------------------- MLX

@dataclass(frozen=True)
class MlxSummary:
    """What an MLX handle holds: dtype, quantization bits and the real array bytes."""

    quant: str
    dtype: str
    bits: int | None
    group_size: int | None
    params_total: int
    quantized_layers: int
    model_bytes: int
    device: str
    backend: str = "mlx"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "quant": self.quant, "dtype": self.dtype, "bits": self.bits,
                "group_size": self.group_size, "params_total": self.params_total,
                "quantized_layers": self.quantized_layers, "model_bytes": self.model_bytes, "device": self.device}


@dataclass
class MlxModel:
    """An mlx-lm model with its tokenizer wrapper."""

    model: Any
    path: str


def _mlx_dir(path: str | os.PathLike, default_model: str | None,
             progress: Callable[[str], None] | None) -> Path:
    name = str(path)
    if name == "default":
        name = default_model if default_model and default_model != "default" else "default"
    if name in ("default", "smollm2-135m-instruct"):
        return gguf_to_safetensors(default_gguf_path(), progress=progress)
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"GGUF file {name!r} does not exist")
        return gguf_to_safetensors(p.resolve(), progress=progress)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ModelError(f"the mlx backend loads a directory with config.json and safetensors weights, not "
                         f"{name!r} (or 'default', or a .gguf file, which is converted once)")
    if not list(p.glob("*.safetensors")):
        raise ModelError(f"{name!r} has no .safetensors weights: mlx-lm loads safetensors only")
    return p.resolve()


def mlx_spec(path: str | os.PathLike = "default", *, quantize_bits: int | None = None, group_size: int = 64,
             dtype: str | None = None, default_model: str | None = None,
             progress: Callable[[str], None] | None = None) -> ModelSpec:
    """The spec of an MLX handle: ``quant`` is ``mlx-q<bits>`` or ``mlx-<dtype>``."""
    if quantize_bits is not None and quantize_bits not in MLX_BITS:
        raise ModelError(f"quantize_bits must be one of {MLX_BITS} (or None), got {quantize_bits!r}")
    if group_size not in (32, 64, 128):
        raise ModelError(f"group_size must be 32, 64 or 128, got {group_size!r}")
    if dtype is not None and dtype not in ("float32", "float16", "bfloat16"):
        raise ModelError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    d = _mlx_dir(path, default_model, progress)
    quant = f"mlx-q{quantize_bits}" if quantize_bits else f"mlx-{_short(dtype) if dtype else 'native'}"
    kw: list[tuple[str, Any]] = [("backend", "mlx"), ("dtype", dtype), ("group_size", group_size),
                                 ("quantize_bits", quantize_bits)]
    return ModelSpec(model=str(d), quant=quant, device="cpu", load_kwargs=tuple(kw))


def _short(dtype: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]


def load_mlx(path: str | os.PathLike = "default", quantize_bits: int | None = None, *, group_size: int = 64,
             dtype: str | None = None, default_model: str | None = None, reference: bool = False,
             progress: Callable[[str], None] | None = None) -> LoadedModel:
    """Load a safetensors directory with ``mlx_lm.load``; ``quantize_bits`` applies ``mlx.nn.quantize``.

    ``"default"`` (or a .gguf file) goes through the same cached safetensors conversion the
    transformers path uses, so both backends see the same weights. ``dtype`` casts the floating
    weights first (None keeps the checkpoint's). Footprint = bytes of every array of the model.
    """
    reason = unavailable_reason("mlx")
    if reason:
        raise BackendUnavailable(reason)
    spec0 = mlx_spec(path, quantize_bits=quantize_bits, group_size=group_size, dtype=dtype,
                     default_model=default_model, progress=progress)
    import mlx.core as mx
    import mlx.nn as nn
    import mlx_lm
    from mlx.utils import tree_flatten, tree_map

    t0 = time.perf_counter()
    try:
        model, tokenizer = mlx_lm.load(spec0.model)
    except Exception as e:
        raise ModelError(f"mlx-lm could not load {spec0.model}: {type(e).__name__}: {e}") from e
    if dtype is not None:
        want = getattr(mx, dtype)
        model.update(tree_map(lambda a: a.astype(want) if mx.issubdtype(a.dtype, mx.floating) else a,
                              model.parameters()))
    if quantize_bits:
        nn.quantize(model, group_size=group_size, bits=quantize_bits)
    mx.eval(model.parameters())
    load_s = time.perf_counter() - t0
    arrays = tree_flatten(model.parameters())
    model_bytes = sum(int(a.nbytes) for _, a in arrays)
    float_dtypes = sorted({str(a.dtype).replace("mlx.core.", "") for _, a in arrays
                           if mx.issubdtype(a.dtype, mx.floating)})
    n_q = sum(1 for _, m in model.named_modules() if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)))
    params = 0
    for k, a in arrays:
        if k.endswith((".scales", ".biases")) and quantize_bits:
            continue
        params += a.size * (32 // quantize_bits) if (quantize_bits and a.dtype == mx.uint32) else a.size
    quant = spec0.quant
    if quant == "mlx-native":
        quant = f"mlx-{_short(float_dtypes[0])}" if len(float_dtypes) == 1 and float_dtypes[0] in (
            "float32", "float16", "bfloat16") else "mlx-mixed"
    spec = ModelSpec(**{**spec0.__dict__, "quant": quant})
    summary = MlxSummary(quant=quant, dtype=",".join(float_dtypes), bits=quantize_bits,
                         group_size=group_size if quantize_bits else None, params_total=params,
                         quantized_layers=n_q, model_bytes=model_bytes, device=str(mx.default_device()))
    if quantize_bits and n_q == 0:
        raise ModelError(f"asked for {quant} but mlx.nn.quantize replaced no layer of {spec0.model}")
    disk = sum(f.stat().st_size for f in Path(spec0.model).glob("*.safetensors"))
    return LoadedModel(model=MlxModel(model=model, path=spec0.model), tokenizer=tokenizer, spec=spec, device="cpu",
                       load_s=load_s, footprint_bytes=model_bytes, disk_bytes=disk, quant_summary=summary,
                       source=spec0.model, reference=reference, backend="mlx")
