"""MLX (``mlx-lm``) as a backend: greedy, fixed length, with an explicit KV cache.

MLX is lazy: nothing runs until an array is evaluated, so every step ends with ``mx.eval`` of
the chosen token; the first-token timestamp is taken after the prompt's token really exists.
Runs on Apple Silicon (Metal) and, with ``mlx[cpu]``, on a Linux CPU.

Loading lives here too: :func:`load_mlx` returns the
:class:`~pytest_quantperf.models.LoadedModel` this backend drives, with ``backend="mlx"`` and
``mlx-<dtype>`` or ``mlx-q<bits>`` as ``spec.quant``. ``mlx`` and ``mlx_lm`` are imported inside
functions (an optional extra).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import BackendUnavailable, MeasurementError, ModelError
from ..models import LoadedModel, ModelSpec
from ..models.sources import default_gguf_path, gguf_to_safetensors
from . import BackendInfo, RunTiming, unavailable_reason

MLX_BITS = (2, 3, 4, 6, 8)


class MlxBackend:
    name = "mlx"

    def __init__(self, lm: Any):
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        self.lm = lm
        self.handle = lm.model
        self.mx = mx
        self._make_cache = make_prompt_cache

    def sync(self) -> None:
        self.mx.synchronize()

    def prepare(self, prompts: Sequence[str]) -> Any:
        if len(prompts) != 1:
            raise MeasurementError(
                f"the mlx backend generates one sequence at a time; got a batch of {len(prompts)} prompts. "
                "Pass one prompt (or measure each prompt in its own generate call)")
        ids = list(self.lm.tokenizer.encode(prompts[0]))
        if not ids:
            raise MeasurementError("the prompt is empty after tokenization: give at least one token of text")
        return self.mx.array([ids])

    def prompt_tokens(self, prepared: Any) -> int:
        return int(prepared.shape[1])

    def run(self, prepared: Any, max_new_tokens: int) -> RunTiming:
        mx = self.mx
        model = self.handle.model
        t0 = time.perf_counter()
        cache = self._make_cache(model)
        logits = model(prepared, cache=cache)
        y = mx.argmax(logits[:, -1, :], axis=-1)
        mx.eval(y)
        t_first = time.perf_counter()
        out = [int(y.item())]
        while len(out) < max_new_tokens:  # EOS does not stop the loop: fixed-length runs
            logits = model(y[:, None], cache=cache)
            y = mx.argmax(logits[:, -1, :], axis=-1)
            mx.eval(y)
            out.append(int(y.item()))
        t1 = time.perf_counter()
        text = self.lm.tokenizer.decode(out)
        return RunTiming(start=t0, first_token=t_first, end=t1, new_tokens=len(out), batch=1, text=text,
                         output_ids=tuple(out))


# --------------------------------------------------------------------------- loading

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


# --------------------------------------------------------------------------- registration

def _load(model: str = "default", **kw: Any) -> Any:
    return load_mlx(model, **kw)


def _unavailable() -> str | None:
    return unavailable_reason("mlx")


BACKEND = BackendInfo(name="mlx", runner=MlxBackend, load=_load, unavailable=_unavailable)
