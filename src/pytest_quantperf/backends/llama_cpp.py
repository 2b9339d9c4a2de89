"""llama.cpp (``llama-cpp-python``) as a backend: greedy, fixed length, on a GGUF file.

The loop is the low-level one (``Llama.eval`` and the argmax of the last logits) rather than
``create_completion``: greedy by construction, no sampler state, and EOS cannot end a run early,
so every run yields exactly ``max_new_tokens`` tokens like the transformers backend does. The
prompt is evaluated afresh in each run (``reset`` drops the KV cache), so time to first token
includes the prompt, as it does there.

Loading lives here too: :func:`load_gguf` returns the
:class:`~pytest_quantperf.models.LoadedModel` this backend drives, with ``backend="llama_cpp"``
and the GGUF file type as ``spec.quant`` (``q4_1``, ``q8_0``, ``f16`` ...). ``llama_cpp`` and
``gguf`` are imported inside functions (an optional extra).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import BackendUnavailable, MeasurementError, ModelError
from ..models import LoadedModel, ModelSpec
from ..models.sources import default_gguf_path
from . import BackendInfo, RunTiming, unavailable_reason


class LlamaCppBackend:
    name = "llama_cpp"

    def __init__(self, lm: Any):
        import numpy as np

        import llama_cpp

        self.lm = lm
        self.handle = lm.model
        self.llama = lm.model.llama
        self._np = np
        self._get_logits = llama_cpp.llama_get_logits_ith
        self._n_vocab = int(self.llama.n_vocab())

    def prepare(self, prompts: Sequence[str]) -> Any:
        if len(prompts) != 1:
            raise MeasurementError(
                f"the llama_cpp backend generates one sequence at a time; got a batch of {len(prompts)} prompts. "
                "Pass one prompt (or measure each prompt in its own generate call)")
        ids = self.lm.tokenizer.encode(prompts[0])
        if not ids:
            raise MeasurementError("the prompt is empty after tokenization: give at least one token of text")
        return list(ids)

    def prompt_tokens(self, prepared: Any) -> int:
        return len(prepared)

    def _argmax(self) -> int:
        ptr = self._get_logits(self.llama.ctx, -1)
        logits = self._np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        return int(logits.argmax())

    def run(self, prepared: Any, max_new_tokens: int) -> RunTiming:
        need = len(prepared) + max_new_tokens
        if need > self.handle.n_ctx:
            raise MeasurementError(
                f"prompt ({len(prepared)} tokens) + max_new_tokens ({max_new_tokens}) = {need} exceeds the "
                f"llama.cpp context n_ctx={self.handle.n_ctx}: load with a larger n_ctx or generate fewer tokens")
        llama = self.llama
        out: list[int] = []
        t0 = time.perf_counter()
        llama.reset()
        llama.eval(prepared)
        tok = self._argmax()
        out.append(tok)
        t_first = time.perf_counter()
        while len(out) < max_new_tokens:  # EOS does not stop the loop: fixed-length runs
            llama.eval([tok])
            tok = self._argmax()
            out.append(tok)
        t1 = time.perf_counter()
        text = self.lm.tokenizer.decode(out, skip_special_tokens=True)
        return RunTiming(start=t0, first_token=t_first, end=t1, new_tokens=len(out), batch=1, text=text,
                         output_ids=tuple(out))


# --------------------------------------------------------------------------- loading

def _cpu_count() -> int:
    with contextlib.suppress(AttributeError, OSError):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


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

    def __call__(self, text: str | list[str], add_special_tokens: bool = True, **_: Any) -> dict[str, list[list[int]]]:
        batch = [text] if isinstance(text, str) else list(text)
        return {"input_ids": [self.encode(t, add_special_tokens=add_special_tokens) for t in batch]}


def loglikelihoods(lm: Any, requests: Sequence[tuple[str, str]]) -> list[float]:
    """Summed log-probability of each continuation given its context, on a llama.cpp model.

    The requests are tokenized as lm-eval's ``HFLM`` does (:mod:`pytest_quantperf.accuracy.loglik`),
    so multiple-choice accuracy means the same here as on transformers. llama.cpp keeps only the
    last position's logits unless loaded with ``logits_all=True``, so the continuation is fed one
    token at a time after its context, reading each next-token distribution as it comes; the
    context is evaluated once and its cache reused for every choice that shares it.
    """
    import numpy as np

    import llama_cpp

    from ..accuracy.loglik import _request

    handle = lm.model
    llama = handle.llama
    n_vocab = int(llama.n_vocab())

    def last_logprobs() -> Any:
        ptr = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
        x = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
        m = x.max()
        return x - (m + np.log(np.exp(x - m).sum()))

    out: list[float] = []
    shared: tuple[list[int], Any] | None = None
    for context, continuation in requests:
        ctx, cont = _request(lm.tokenizer, context, continuation)
        if not cont:
            raise MeasurementError(f"the continuation {continuation!r} is empty after tokenization")
        if len(ctx) + len(cont) > handle.n_ctx:
            raise MeasurementError(
                f"a question and its answer take {len(ctx) + len(cont)} tokens, more than the llama.cpp context "
                f"n_ctx={handle.n_ctx}: load the GGUF file with a larger n_ctx")
        if shared is None or shared[0] != ctx:
            llama.reset()
            llama.eval(ctx)
            shared = (ctx, last_logprobs())
        else:
            llama.n_tokens = len(ctx)  # back to the end of the shared context: the next eval drops the rest
        total = float(shared[1][cont[0]])
        for prev, tok in zip(cont, cont[1:]):
            llama.eval([prev])
            total += float(last_logprobs()[tok])
        out.append(total)
    llama.reset()
    return out


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


# --------------------------------------------------------------------------- registration

def _load(model: str = "default", **kw: Any) -> Any:
    return load_gguf(model, **{k: v for k, v in kw.items() if k != "progress"})


def _unavailable() -> str | None:
    return unavailable_reason("llama_cpp")


BACKEND = BackendInfo(name="llama_cpp", runner=LlamaCppBackend, load=_load, unavailable=_unavailable)
