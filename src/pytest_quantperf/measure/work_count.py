"""Counting the work of one greedy decode: operators, Python calls, syncs and kernel launches.

The count is taken in a run of its own after the timed runs, so it never touches a timed sample.
Three counters, each switched on and off around segments of one ``backend.run``:

* operators: a :class:`~torch.utils._python_dispatch.TorchDispatchMode` that counts every torch
  operator that reaches the Python dispatch key, by overload packet (``aten.select``);
* Python calls: ``sys.setprofile`` on the generating thread, counting ``call`` and ``c_call``
  events by qualified name, with garbage collection off (a collection runs finalizers at moments
  that depend on the allocation history, not on the code). The operator counter's own frames
  (its ``__torch_dispatch__`` and the ``OpOverload.__call__`` it goes through) and this module's
  switching frames are left out, so one run counts both without one counter showing in the other;
* CUDA (only where the model is on CUDA): kineto's raw records, kernel launches by kernel name,
  and the runtime's syncs (``cudaStreamSynchronize``, ``cudaDeviceSynchronize``, ...) and
  device-to-host copies.

Host-device syncs are defined once, in :data:`SYNC_OPS` (operators that read device memory on the
host, each a sync on a GPU; on the CPU the stand-in for them), :data:`SYNC_CALLS` (Python calls
that wait for the device, such as ``torch.cuda.synchronize``), the device-to-host copies the
operator counter sees (``.cpu()``, ``.to("cpu")`` of a device tensor) and :data:`CUDA_SYNC_CALLS`
(what the CUDA runtime records, where kineto's launch counter runs). Without the CUDA counter
``syncs`` counts the first three; with it, the runtime's records.

Counting a whole generate costs about three plain generates on the CPU runner (each Python call
and each operator goes through a Python callback), so, like the kernel-time window
(``gpu/window.py``), a generate long enough is counted in three segments: setup and prefill up to
the first token, ``window`` decode steps in the middle, and the end after the last token; the
window's counts stand for every decode step (greedy decode steps at a fixed batch run the same
code). ``benchmarks/work_counts.py`` measures the cost; the metric's ``extra`` says which scope.

torch builds an operator's Python object the first time it reaches a dispatch mode, so the first
count of a process would carry about a thousand one-time Python calls that a later one lacks: a
short generate under the operator counter comes first, and the count is the same whatever ran
before it in the process.
"""
from __future__ import annotations

import gc
import sys
import time
from typing import Any

from .work import SCOPE_WHOLE, SCOPE_WINDOW, Work

#: operators that read device memory on the host: on a GPU each one waits for the device (a sync);
#: on the CPU they are counted by name as the syncs this decode would make on a GPU. Overload
#: packets as the dispatch mode sees them: ``.item()``, ``int(t)`` and ``float(t)`` arrive as
#: ``aten.item`` under inference mode (as ``aten._local_scalar_dense`` outside it), ``bool(t)`` as
#: ``aten.is_nonzero``, ``torch.equal`` as ``aten.equal``; operators whose output shape depends on
#: the data (``nonzero``, ``masked_select``, ``unique``) must read it to size the output. Only the
#: operator the mode sees is counted, never the ones it runs inside, so a read counts once.
#: ``.tolist()``/``.cpu()`` of a device tensor are copies the CPU cannot tell from its own: on CUDA
#: the runtime's device-to-host copies count them
SYNC_OPS: frozenset[str] = frozenset({
    "aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal",
    "aten.nonzero", "aten.masked_select", "aten._unique", "aten._unique2", "aten.unique_dim",
    "aten.unique_consecutive", "aten.unique_dim_consecutive",
})

#: Python functions that block the host until the device is done, by the name the call counter
#: gives them: an explicit ``torch.cuda.synchronize()`` per decode step is a sync no operator shows
SYNC_CALLS: frozenset[str] = frozenset({
    "torch.cuda.synchronize", "torch.cuda.streams.Stream.synchronize", "torch.cuda.streams.Event.synchronize",
    "torch.cuda.streams.ExternalStream.synchronize",
})

#: the name a device-to-host copy is counted under among the syncs (without the CUDA counter)
DTOH_COPY = "copy device-to-host"

#: CUDA runtime calls that block the host until the device is done (kineto's ``cuda_runtime``
#: records); device-to-host copies are counted from the ``gpu_memcpy`` records named ``DtoH``
CUDA_SYNC_CALLS: frozenset[str] = frozenset({
    "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
    "cudaMemcpy2D", "cudaStreamWaitEvent",
})

#: decode steps counted by default; a generate shorter than ``2 * window + 1`` tokens is counted whole
DEFAULT_WINDOW = 8

Counts = dict[str, dict[str, float]]  # kind -> name -> count


def _add(into: Counts, seg: Counts, factor: float = 1.0) -> None:
    for kind, names in seg.items():
        d = into.setdefault(kind, {})
        for n, c in names.items():
            d[n] = d.get(n, 0.0) + c * factor


# --------------------------------------------------------------------------- counters

def _op_counter_class() -> Any:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        """Counts each operator that reaches the Python dispatch key, then runs it unchanged."""

        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            # no torch._disable_dynamo wrapper around __torch_dispatch__: its frames would be Python
            # calls of every operator, and its code is shared with every function dynamo leaves alone
            return False

        def __init__(self) -> None:
            super().__init__()
            self.counts: dict[Any, int] = {}
            self.dtoh = 0  # copies from a device tensor into host memory: each one waits for the device
            self._to_copy = torch.ops.aten._to_copy.default
            self._copy_ = torch.ops.aten.copy_.default

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            c = self.counts
            c[func] = c.get(func, 0) + 1
            if func is self._to_copy or func is self._copy_:
                src = args[0] if func is self._to_copy else args[1]
                dst = (kwargs or {}).get("device") if func is self._to_copy else args[0].device
                if (getattr(src, "device", None) is not None and src.device.type not in ("cpu", "meta")
                        and dst is not None and torch.device(dst).type == "cpu"):
                    self.dtoh += 1
            return func(*args, **(kwargs or {}))

    return OpCounter


class _Ops:
    """Operators by overload packet, and the device-to-host copies among them (``dtoh``)."""

    def __init__(self) -> None:
        self.mode = _op_counter_class()()
        self.on = False

    def skip_codes(self) -> set[Any]:
        """The Python frames each counted operator adds: the mode's own, the ``OpOverload`` call it
        makes, and torch's look-up of dispatch rules for the mode (called by the dispatcher itself)."""
        codes = {type(self.mode).__torch_dispatch__.__code__}
        try:
            from torch._library import simple_registry as sr

            codes.add(sr.find_torch_dispatch_rule.__code__)
            for name in ("GenericTorchDispatchRuleHolder", "SimpleLibraryRegistry"):
                cls = getattr(sr, name, None)
                if cls is not None and hasattr(cls, "find"):
                    codes.add(cls.find.__code__)
        except (ImportError, AttributeError):
            pass
        return codes

    def child_codes(self) -> set[Any]:
        """Frames skipped only when a skipped frame called them (with the C functions they call):
        the ``OpOverload.__call__`` the mode makes and the ``OpOverload.__hash__`` of the rule
        look-up's dict, not those of the decode's own code (bitsandbytes calls its operators
        through ``OpOverload.__call__`` too)."""
        from torch._ops import OpOverload

        out = set()
        for name in ("__call__", "__hash__"):
            f = OpOverload.__dict__.get(name)
            if f is not None and hasattr(f, "__code__"):
                out.add(f.__code__)
        return out

    def start(self) -> None:
        self.mode.__enter__()
        self.on = True

    def stop(self) -> None:
        self.on = False
        self.mode.__exit__(None, None, None)

    def take(self) -> Counts:
        ops: dict[str, float] = {}
        for func, n in self.mode.counts.items():
            name = str(getattr(func, "overloadpacket", func))
            ops[name] = ops.get(name, 0) + n
        self.mode.counts = {}
        out: Counts = {"ops": ops}
        if self.mode.dtoh:
            out["dtoh"] = {DTOH_COPY: self.mode.dtoh}
        self.mode.dtoh = 0
        return out


def _c_name(f: Any) -> str:
    q = getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or type(f).__name__
    m = getattr(f, "__module__", None)
    if m:
        return f"{m}.{q}"
    s = getattr(f, "__self__", None)
    if s is not None:
        return f"{type(s).__module__}.{q}"
    return str(q)


class _PyCalls:
    """Python ``call`` and ``c_call`` events of this thread, by qualified name, gc off."""

    def __init__(self, skip: set[Any], children: set[Any] = frozenset()) -> None:
        self.skip = skip
        self.calls: dict[Any, int] = {}  # code object -> count
        self.mods: dict[Any, str] = {}
        self.c_calls: dict[str, int] = {}
        self._prev: Any = None
        self._gc = False
        calls, c_calls, mods, skip_ = self.calls, self.c_calls, self.mods, self.skip
        children_ = frozenset(children)
        c_name = _c_name

        def prof(frame: Any, event: str, arg: Any) -> None:
            if event != "call" and event != "c_call":
                return
            code = frame.f_code
            if code in skip_:
                return
            if code in children_ and frame.f_back is not None and frame.f_back.f_code in skip_:
                return
            if event == "call":
                n = calls.get(code)
                if n is None:
                    calls[code] = 1
                    mods[code] = frame.f_globals.get("__name__") or code.co_filename
                else:
                    calls[code] = n + 1
            else:
                name = c_name(arg)
                c_calls[name] = c_calls.get(name, 0) + 1

        self.prof = prof

    def start(self) -> None:
        self._gc = gc.isenabled()
        gc.disable()
        self._prev = sys.getprofile()
        sys.setprofile(self.prof)

    def stop(self) -> None:
        sys.setprofile(self._prev)
        self._prev = None
        if self._gc:
            gc.enable()

    def take(self) -> Counts:
        out: dict[str, float] = dict(self.c_calls)
        for code, n in self.calls.items():
            name = f"{self.mods[code]}.{getattr(code, 'co_qualname', code.co_name)}"
            out[name] = out.get(name, 0) + n
        self.calls.clear()
        self.c_calls.clear()
        return {"py_calls": out}


class _Cuda:
    """Kernel launches by kernel name and the runtime's syncs and device-to-host copies (kineto)."""

    def __init__(self, device: Any) -> None:
        import torch

        from ..gpu.kernel_time import _raw_api, _require_cuda

        _require_cuda()
        api = _raw_api()
        if api is None:
            raise RuntimeError("this torch lacks kineto's raw profiler API: CUDA launches are not counted")
        self.torch = torch
        self.device = device
        self.config, self.acts_api, self.dev_api, self.prepare, self.enable, self.disable = api
        self.acts = {self.acts_api.CUDA}
        self.raw: list[Any] = []

    def start(self) -> None:
        self.prepare(self.config, self.acts)
        self.enable(self.config, self.acts)

    def stop(self) -> None:
        # kernels still running when the profiler stops would be missing at random: wait for them
        self.torch.cuda.synchronize(self.device)
        self.raw.append(self.disable())

    def take(self) -> Counts:
        launches: dict[str, float] = {}
        syncs: dict[str, float] = {}
        for raw in self.raw:
            for evt in raw.events():
                at = getattr(evt, "activity_type", None)
                kind = str(at()).lower() if at is not None else ""
                name = evt.name()
                if kind == "kernel":
                    launches[name] = launches.get(name, 0) + 1
                elif kind == "gpu_memcpy" and "DtoH" in name:
                    syncs[name] = syncs.get(name, 0) + 1
                elif kind == "cuda_runtime" and name in CUDA_SYNC_CALLS:
                    syncs[name] = syncs.get(name, 0) + 1
            # stop() itself synchronised once (torch.cuda.synchronize: cudaDeviceSynchronize)
            if syncs.get("cudaDeviceSynchronize", 0) >= 1:
                syncs["cudaDeviceSynchronize"] -= 1
                if not syncs["cudaDeviceSynchronize"]:
                    del syncs["cudaDeviceSynchronize"]
        self.raw = []
        return {"launches": launches, "syncs": syncs}


# --------------------------------------------------------------------------- the counting run

def _host_syncs(seg: Counts, dtoh: dict[str, float]) -> dict[str, float]:
    """The syncs of a segment counted without the CUDA runtime, by name: scalar reads among its
    operators, its device-to-host copies and its explicit waits among its Python calls."""
    out = {k: v for k, v in seg.get("ops", {}).items() if k in SYNC_OPS}
    out.update({k: v for k, v in seg.get("py_calls", {}).items() if k in SYNC_CALLS})
    out.update(dtoh)
    return out


def window_start(n_tokens: int, window: int) -> int | None:
    """After which generated token the window opens, or None: count the whole generate."""
    from ..gpu.window import window_start as ws

    return ws(n_tokens, window)


def count_work(backend: Any, prepared: Any, max_new_tokens: int, *, cuda_device: Any = None,
               window: int = DEFAULT_WINDOW, prompt_tokens: int | None = None,
               batch: int = 1) -> Work:
    """The work of one ``backend.run(prepared, max_new_tokens)``, counted in a run of its own.

    ``cuda_device`` (a torch device) adds kernel launches and the runtime's syncs; without it the
    syncs are the scalar reads of :data:`SYNC_OPS`. ``window`` decode steps stand for all of them
    when the generate is long enough and the backend reports its steps (``step_hook``); 0 counts
    the whole generate.
    """
    cuda = None
    cuda_note = ""
    if cuda_device is not None:
        try:
            cuda = _Cuda(cuda_device)
        except RuntimeError as e:  # no kineto here: operators, calls and scalar reads are still counted
            cuda_note = str(e)
    ops = _Ops()
    counters: list[Any] = [ops]
    if cuda is not None:
        counters.insert(0, cuda)  # outermost: its switching is not an operator or a call
    segs: list[Counts] = []
    on = [False]

    def start() -> None:
        for c in counters:
            c.start()
        py.start()  # last on, first off: the other counters' switching is never profiled
        on[0] = True

    def stop() -> None:
        py.stop()
        for c in reversed(counters):
            c.stop()
        on[0] = False
        seg: Counts = {}
        for c in (*counters, py):
            _add(seg, c.take())
        dtoh = seg.pop("dtoh", {})
        if cuda is None:
            seg["syncs"] = _host_syncs(seg, dtoh)
        segs.append(seg)

    a = window_start(max_new_tokens, window) if window and getattr(backend, "step_hook", False) else None

    def on_step(i: int) -> None:
        # gpu.window.window_step's rule, written out: this hook runs while the Python calls are being
        # counted, and every frame a helper added would be counted as the decode's own
        if a is None:
            return
        if i == 1 and on[0]:
            stop()
        if i == a and not on[0]:
            start()
        if i == a + window and on[0]:
            stop()
        if i == max_new_tokens and not on[0]:
            start()

    skip = ops.skip_codes() | {f.__code__ for f in (start, stop, on_step)} | {
        _PyCalls.start.__code__, _PyCalls.stop.__code__}
    py = _PyCalls(skip, ops.child_codes())
    t0 = time.perf_counter()
    # torch builds the Python object of an operator the first time one reaches a dispatch mode (about
    # 20 Python calls each, ~1,000 for a decode): a short run under the mode first, so the count never
    # depends on whether an earlier test of the process already counted the same operators
    ops.start()
    try:
        backend.run(prepared, min(2, max_new_tokens))
    finally:
        ops.stop()
        ops.take()
    start()
    try:
        run = backend.run(prepared, max_new_tokens, on_step=on_step) if a is not None else \
            backend.run(prepared, max_new_tokens)
    finally:
        if on[0]:
            stop()
    seconds = time.perf_counter() - t0
    if run.new_tokens != max_new_tokens:
        raise RuntimeError(f"the counting run generated {run.new_tokens} of {max_new_tokens} tokens")
    total: Counts = {}
    detail: dict[str, Any] = {"seconds": round(seconds, 3),
                              "syncs_source": "cuda runtime" if cuda is not None
                              else "scalar-read ops, device-to-host copies and sync calls"}
    if cuda_note:
        detail["cuda"] = cuda_note
    if a is None:
        if len(segs) != 1:
            raise RuntimeError(f"the counting run closed {len(segs)} segments, expected 1")
        total = segs[0]
        scope = SCOPE_WHOLE
    else:
        if len(segs) != 3:
            raise RuntimeError(f"the counting run closed {len(segs)} segments, expected 3 (did the backend "
                               "report every step?)")
        _add(total, segs[0])
        _add(total, segs[2])
        _add(total, segs[1], (max_new_tokens - 1) / window)
        scope = SCOPE_WINDOW
        detail.update({"window": window, "window_after_token": a,
                       "formula": "prefill + end + (tokens - 1) * window / window_steps"})
    totals = {k: sum(v.values()) for k, v in total.items()}
    for k in ("ops", "py_calls", "syncs"):
        totals.setdefault(k, 0.0)
        total.setdefault(k, {})
    return Work(tokens=max_new_tokens, prompt_tokens=int(prompt_tokens if prompt_tokens is not None else 0),
                totals=totals, by_name={k: {n: c for n, c in v.items() if c} for k, v in total.items()},
                scope=scope, batch=batch, detail=detail)


def plain_seconds(backend: Any, prepared: Any, max_new_tokens: int, n: int = 3) -> list[float]:
    """Wall seconds of ``n`` plain runs: what the counting run's cost is held against."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend.run(prepared, max_new_tokens)
        out.append(time.perf_counter() - t0)
    return out


def counts_work(backend: Any) -> bool:
    """Whether a backend's runs can be counted: torch under it, and it says so (``counts_work``)."""
    return bool(getattr(backend, "counts_work", False))

