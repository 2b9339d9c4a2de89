"""The session's loaded models, keyed by spec: each is loaded once, and on CUDA the least
recently used go first when the next one would not fit (predicted by ``fit`` before loading).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ModelError
from .loading import LoadedModel, load, resolve_source
from .spec import ModelSpec


@dataclass
class ModelCache:
    """Loaded models of one session, keyed by spec; least recently used go first when CUDA is full."""

    default_model: str | None = None
    progress: Callable[[str], None] | None = None
    _items: "OrderedDict[ModelSpec, LoadedModel]" = field(default_factory=OrderedDict)
    loads: int = 0

    def get(self, spec: ModelSpec) -> LoadedModel:
        if spec in self._items:
            self._items.move_to_end(spec)
            return self._items[spec]
        if spec.device.startswith("cuda"):
            self._make_room(spec)
        try:
            lm = load(spec, default_model=self.default_model, progress=self.progress)
        except ModelError as e:
            if spec.device.startswith("cuda") and "out of memory" in str(e) and self._items:
                self.clear()
                lm = load(spec, default_model=self.default_model, progress=self.progress)
            else:
                raise
        self._items[spec] = lm
        self.loads += 1
        return lm

    def _make_room(self, spec: ModelSpec) -> None:
        import torch

        need = None
        with contextlib.suppress(Exception):
            from . import fit

            need = fit.predict(spec.model if spec.synthetic else resolve_source(spec, self.default_model)[0],
                               spec.quant, double_quant=bool(spec.double_quant),
                               compute_dtype=spec.compute_dtype, device=spec.device).peak_bytes
        if need is None:
            return
        dev = torch.device(spec.device)
        while self._items:
            free, _total = torch.cuda.mem_get_info(dev)
            if free >= need * 1.1:
                return
            self.evict_oldest()

    def evict_oldest(self) -> None:
        import gc

        spec, lm = self._items.popitem(last=False)
        del lm
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def clear(self) -> None:
        while self._items:
            self.evict_oldest()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, spec: ModelSpec) -> bool:
        return spec in self._items
