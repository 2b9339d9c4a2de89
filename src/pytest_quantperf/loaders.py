"""Model handles for the non-transformers backends: GGUF files through llama.cpp, and MLX.

The code lives with each backend's runner: :mod:`pytest_quantperf.backends.llama_cpp` loads
GGUF files, :mod:`pytest_quantperf.backends.mlx` loads MLX models, and
:mod:`pytest_quantperf.backends` says which backends can run here. This module keeps the import
path suites and tests use (``from pytest_quantperf import loaders``; ``loaders.load_gguf``,
``loaders.load_mlx``, ``loaders.unavailable_reason`` ...) and re-exports those names; nothing in
the package imports it.

Both loaders return the same :class:`~pytest_quantperf.models.LoadedModel` the fixtures hand
out, with ``backend`` set, so ``quantperf.generate`` and every budget work on them unchanged.
The spec's ``quant`` names what the weights really are: the GGUF file type (``q4_1``, ``q8_0``,
``f16`` ...) for llama.cpp, ``mlx-<dtype>`` or ``mlx-q<bits>`` for MLX. Those names are outside
``models.QUANTS`` on purpose: calling a Q4_1 file "fp32" would lie in every report, and the
names keep a GGUF handle's metric keys apart from the same weights loaded through transformers.
The backend and its settings ride in ``spec.load_kwargs`` (``backend=...``), so specs stay
hashable cache keys and the run document says how the model was loaded.

Kept free of pytest; ``llama_cpp`` and ``mlx`` are imported inside functions (optional extras).
To change what a loader does in a test, patch it in its new home (``backends.available``,
``backends.llama_cpp.load_gguf`` ...): a patch on this module reaches no code that runs.
"""
from __future__ import annotations

from .backends import available, unavailable_reason
from .backends.llama_cpp import (GgufModel, GgufSummary, GgufTokenizer, _cpu_count, _gguf_device, _gguf_path,
                                 gguf_spec, gguf_type_name, load_gguf)
from .backends.mlx import MLX_BITS, MlxModel, MlxSummary, _mlx_dir, _short, load_mlx, mlx_spec
from .errors import BackendUnavailable, ModelError
from .models import LoadedModel, ModelSpec
from .sources import default_gguf_path, gguf_to_safetensors

__all__ = [
    "available", "unavailable_reason",
    "GgufModel", "GgufSummary", "GgufTokenizer", "gguf_spec", "gguf_type_name", "load_gguf",
    "MLX_BITS", "MlxModel", "MlxSummary", "load_mlx", "mlx_spec",
    "BackendUnavailable", "ModelError", "LoadedModel", "ModelSpec",
]
