"""Loading a spec into a :class:`LoadedModel`: where the weights come from, the quantization
config (BitsAndBytesConfig, or another method's, see ``methods``), the real footprint and the
check that the quantization applied. The one entry point the fixtures, the CLI and the
benchmarks share.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ModelError
from .sources import DEFAULT_MODEL, default_gguf_path, gguf_to_safetensors
from .weights import measured_weight_bytes
from . import methods
from .inspect import QuantSummary, inspect_quantization, per_device_bytes, verify_quantization
from .spec import ModelSpec, _thaw, default_compute_dtype, torch_dtype, weight_dtype
from .synthetic import build


def resolve_source(spec: ModelSpec, default_model: str | None = None,
                   progress: Callable[[str], None] | None = None) -> tuple[str, dict[str, Any]]:
    """Where the weights come from: (path or hub id, extra from_pretrained kwargs)."""
    name = spec.model
    if name == "default":
        name = default_model or "default"
    if name in ("default", DEFAULT_MODEL):
        with _quiet_hf():
            return str(gguf_to_safetensors(default_gguf_path(), progress=progress)), {}
    if name.startswith("synthetic:"):
        return name, {}
    p = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not p.is_file():
            raise ModelError(f"GGUF file {name!r} does not exist")
        return str(gguf_to_safetensors(p.resolve(), progress=progress)), {}
    if p.is_dir():
        if not (list(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").exists()):
            raise ModelError(
                f"{name!r} has no .safetensors weights: only safetensors or GGUF are loaded "
                "(no pickle-based .bin files); convert it with save_pretrained(safe_serialization=True)")
        return str(p), {}
    if p.exists() or name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelError(f"model path {name!r} does not exist (and is not a hub id of the form org/name)")
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        return name, {}
    raise ModelError(f"model {name!r} is neither a directory, a .gguf file, a hub id, 'default' nor synthetic:<preset>")


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model handle: what fixtures return and what ``quantperf`` measures.

    ``reference`` marks the handle given out by ``fp16_model``: its metrics are recorded under
    ``ref.<name>`` and ``*_vs_ref`` budgets compare against them.
    """

    model: Any
    tokenizer: Any
    spec: ModelSpec
    device: str
    load_s: float
    footprint_bytes: int
    disk_bytes: int
    quant_summary: QuantSummary | None = None
    source: str = ""
    reference: bool = False
    backend: str = "transformers"

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def synthetic(self) -> bool:
        return self.spec.synthetic

    @property
    def footprint_mb(self) -> float:
        return self.footprint_bytes / 2**20

    @property
    def disk_mb(self) -> float:
        return self.disk_bytes / 2**20

    def as_reference(self) -> "LoadedModel":
        return replace(self, reference=True)

    def summary(self) -> dict[str, Any]:
        split = None
        hf_map = getattr(self.model, "hf_device_map", None)
        if hf_map and len(set(map(str, hf_map.values()))) > 1:
            with contextlib.suppress(Exception):
                split = {k: round(v / 2**20, 1) for k, v in per_device_bytes(self.model).items()}
        return {"label": self.label, "per_device_mb": split, "spec": self.spec.to_dict(), "device": self.device,
                "source": self.source, "backend": self.backend,
                "load_s": round(self.load_s, 3), "footprint_mb": round(self.footprint_mb, 2),
                "disk_mb": round(self.disk_mb, 2), "reference": self.reference,
                "quant_summary": self.quant_summary.to_dict() if self.quant_summary else None}


def bnb_config(spec: ModelSpec):
    from transformers import BitsAndBytesConfig

    if spec.quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if spec.quant in ("nf4", "fp4"):
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=spec.quant,
            bnb_4bit_use_double_quant=bool(spec.double_quant),
            bnb_4bit_compute_dtype=torch_dtype(spec.compute_dtype or default_compute_dtype(spec.device)))
    return None


def _dir_bytes(path: str) -> int:
    p = Path(path)
    if not p.exists():
        return 0
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.iterdir() if f.is_file() and f.suffix in (".safetensors", ".gguf"))


@contextlib.contextmanager
def _allocated_delta(device: str) -> Iterator[list[int]]:
    out = [0]
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out[0] = torch.cuda.memory_allocated(device) - before
    else:
        yield out


@contextlib.contextmanager
def _quiet_hf() -> Iterator[None]:
    """No tqdm bars inside test output: the plugin prints one progress line per load instead."""
    try:
        from transformers.utils import logging as hf_logging
    except Exception:
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _import_quantizers_quietly() -> None:
    """Import bitsandbytes and transformers' quantizers once, with their import-time noise left out.

    bitsandbytes' modules use ``torch.jit.script_method``, which torch 2.13 deprecates: importing
    it emits 14 DeprecationWarnings that a user's suite would show as its own. The first import is
    done here, under a filter for exactly that message; later imports are cached and silent. The
    warnings a quantizer logs while running (bitsandbytes falling back from its fused CPU kernel,
    say) are not touched: they are about the measured code.
    """
    import warnings

    if importlib.util.find_spec("bitsandbytes") is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated",
                                    category=DeprecationWarning)
            with contextlib.suppress(Exception):  # a broken install is reported by the load that needs it
                import bitsandbytes  # noqa: F401
    if "transformers.quantizers.auto" in sys.modules:
        return
    # transformers imports every installed quantizer's integration the first time any quantized model
    # loads; torchao's import logs the optional kernels this build lacks (mxfp8, cutlass, Triton) and
    # torch's pytree its enum deprecations: import-time lines about code the test never runs
    levels = {name: logging.getLogger(name).level for name in _IMPORT_NOISE_LOGGERS}
    try:
        for name in levels:
            logging.getLogger(name).setLevel(logging.ERROR)
        with contextlib.suppress(Exception):
            import transformers.quantizers.auto  # noqa: F401
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


#: loggers whose import-time warnings :func:`_import_quantizers_quietly` keeps out of a user's run
_IMPORT_NOISE_LOGGERS = ("torchao", "torchao.kernel.intmm", "torch.utils._pytree")


def load(spec: ModelSpec, *, default_model: str | None = None, verify: bool = True,
         progress: Callable[[str], None] | None = None) -> LoadedModel:
    """Load (or build) the model a spec describes, measure its real footprint and check it."""
    _import_quantizers_quietly()
    with _quiet_hf():
        return _load(spec, default_model=default_model, verify=verify, progress=progress)


def _load(spec: ModelSpec, *, default_model: str | None, verify: bool,
          progress: Callable[[str], None] | None) -> LoadedModel:
    import torch

    if spec.quant in ("int8", "nf4", "fp4") and importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"{spec.quant} needs bitsandbytes: pip install bitsandbytes")
    methods.check_available(spec)
    t0 = time.perf_counter()
    source, extra = resolve_source(spec, default_model, progress)
    if spec.quant == "checkpoint" and not os.path.isdir(source):
        raise ModelError(f"quant='checkpoint' needs a local checkpoint directory; {spec.model!r} is not one "
                         "(download it first, then pass its path)")
    want_method = methods.expected_method(spec, source)
    kwargs = {k: _thaw(v) for k, v in spec.load_kwargs}
    multi = "device_map" in kwargs
    try:
        with _allocated_delta(spec.device) as delta:
            if spec.synthetic:
                model, tokenizer = build(spec, kwargs, progress=progress)
                disk = 0
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                if progress:
                    progress(f"loading {spec.label} from {source} on {spec.device}")
                dt = torch_dtype(weight_dtype(spec))
                load_kw: dict[str, Any] = dict(dtype=dt, use_safetensors=True,
                                               trust_remote_code=spec.trust_remote_code)
                if not multi and not (spec.quant == "hqq-4bit" and spec.device == "cpu"):
                    load_kw["device_map"] = {"": spec.device}  # (transformers' HQQ refuses a CPU device_map)
                load_kw.update(extra)
                load_kw.update(kwargs)
                try:
                    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
                    if spec.quant in ("int8", "nf4", "fp4"):
                        q = bnb_config(spec)
                    else:
                        q = methods.quantization_config(
                            spec, tokenizer, methods.calibration_texts(spec) if spec.quant == "gptq-int4" else None)
                    if q is not None:
                        load_kw["quantization_config"] = q
                    model = AutoModelForCausalLM.from_pretrained(source, **load_kw)
                except OSError as e:
                    raise ModelError(
                        f"could not load {source!r}: {e}. For a hub id, download it first (huggingface-cli "
                        "download) or point --quantperf-model at a local directory; HF_HUB_OFFLINE is honoured") from e
                except (ImportError, ValueError, RuntimeError, NotImplementedError, TypeError, AttributeError) as e:
                    if isinstance(e, torch.cuda.OutOfMemoryError):
                        raise
                    clear = methods.explain_load_error(spec, e)
                    if clear is None:
                        raise
                    raise clear from e
                model.eval()
                if want_method == "compressed-tensors" and not spec.device.startswith("cuda"):
                    methods.expand_now(model)
                disk = _dir_bytes(source) if os.path.exists(source) else 0
                if spec.model.endswith(".gguf"):
                    disk = _dir_bytes(spec.model)
    except torch.cuda.OutOfMemoryError as e:
        raise ModelError(f"CUDA out of memory while loading {spec.label} on {spec.device}: {e}") from e
    load_s = time.perf_counter() - t0
    if spec.device.startswith("cuda") and not multi:
        footprint = delta[0] if delta[0] > 0 else measured_weight_bytes(model)
    elif multi:
        footprint = sum(per_device_bytes(model).values())  # offloaded weights live in hooks, not the model
    else:
        footprint = measured_weight_bytes(model)
    summary = inspect_quantization(model, spec, footprint, method=want_method)
    if verify:
        verify_quantization(summary, spec)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, device=spec.device, load_s=load_s,
                       footprint_bytes=footprint, disk_bytes=disk, quant_summary=summary, source=source)
