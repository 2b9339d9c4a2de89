"""Model specs, loading, the default model, synthetic presets and the session cache.

Kept free of pytest so the ``quantperf`` command and benchmarks load models the same way the
fixtures do. torch, transformers and bitsandbytes are imported inside functions: importing this
package costs nothing. One module per concern: ``spec`` (names and validation), ``synthetic``
(random-weight presets, in-memory quantization), ``loading`` (``load`` and the handle),
``inspect`` (what the loaded model holds), ``cache`` (the session's LRU), ``sources`` (where the
default model's files come from), ``weights`` (the bytes the weights take) and ``fit`` (will it
fit: imported on its own, not here); this module hands on the names callers use. The model
exceptions live in :mod:`pytest_quantperf.errors`.
"""
from __future__ import annotations

from .sources import (DEFAULT_GGUF, DEFAULT_MODEL, SYNTHETIC_PRESETS, cache_root,  # noqa: F401
                       default_gguf_path, file_sha256, gguf_to_safetensors, synthetic_config)
from .weights import measured_weight_bytes  # noqa: F401
from .cache import ModelCache  # noqa: F401
from .inspect import (QuantSummary, inspect_quantization, per_device_bytes,  # noqa: F401
                      verify_quantization)
from .loading import LoadedModel, bnb_config, load, resolve_source  # noqa: F401
from .methods import unavailable_reason  # noqa: F401
from .spec import (DTYPES, QUANTS, ModelSpec, default_compute_dtype, make_spec,  # noqa: F401
                   normalize_dtype, resolve_device, short_dtype, torch_dtype, weight_dtype)
from .synthetic import ByteTokenizer, quantize_in_memory  # noqa: F401
