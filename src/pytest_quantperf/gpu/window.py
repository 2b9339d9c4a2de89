"""GPU kernel time of a generate from its prefill and a window of decode steps.

Profiling a whole 128-token generate of a 7B model costs two to three plain generates: CUPTI
slows every launch while it records, and reading ~100k raw events afterwards takes seconds. Decode
steps of one greedy generate at a fixed batch run the same kernels, their time growing only with
the KV cache, which a window centred in the decode phase averages out. So the profiler records
two segments of one otherwise plain run (setup plus prefill up to the first token, and ``window``
decode steps around the middle) and the figure is::

    kernel time = prefill segment + (n_tokens - 1) * (window segment / window)

That run costs about one plain generate, doubles as the full-length warm-up, and gives the
whole-run figure within a fraction of a percent (``benchmarks/kernel_time_cost.py`` measures both
on the same run for the GPU; the ``cpu`` activity exists so the same code is tested without one).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

PATH_WINDOW = "kineto-window"

#: decode steps profiled by default; a generate shorter than ``2 * window + 1`` tokens is profiled whole
DEFAULT_WINDOW = 8


@dataclass(frozen=True)
class WindowProfile:
    """Kernel time of one generate estimated from its profiled segments (see the module docstring).

    ``gpu_ms`` is the estimate for the whole generate (the figure reports use); ``prefill_ms`` the
    setup-plus-prefill segment, ``decode_ms_per_step`` the mean of the window's steps; ``wall_ms``
    the profiled generate's wall time and ``collect_ms`` what reading the events cost after it.
    """

    gpu_ms: float
    n_events: int
    wall_ms: float
    prefill_ms: float
    decode_ms_per_step: float
    window: int
    n_tokens: int
    path: str = PATH_WINDOW
    collect_ms: float = 0.0
    switch_ms: float = 0.0  # inside the generate: switching the profiler on and off (4 times)
    result: Any = None

    @property
    def total_ms(self) -> float:
        return self.wall_ms + self.collect_ms

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "prefill_ms": round(self.prefill_ms, 4),
                "decode_ms_per_step": round(self.decode_ms_per_step, 5), "window": self.window,
                "n_tokens": self.n_tokens, "events": self.n_events, "switch_ms": round(self.switch_ms, 2),
                "collect_ms": round(self.collect_ms, 2)}


def window_step(i: int, first: int, window: int, is_on: Callable[[], bool], start: Callable[[], None],
                stop: Callable[[], None], *, last: int | None = None) -> None:
    """The one window rule, at generated token ``i``: stop after the prefill (token 1), start at
    ``first``, stop after ``window`` decode steps, and (with ``last``) start again for the final one.

    Kernel time and the work count both measure a window of decode steps and scale it; they share
    this rule so that their windows are the same steps.
    """
    if i == 1 and is_on():
        stop()
    if i == first and not is_on():
        start()
    if i == first + window and is_on():
        stop()
    if last is not None and i == last and not is_on():
        start()


def window_start(n_tokens: int, window: int) -> int | None:
    """After which generated token the window opens (it closes ``window`` tokens later), or None
    when the generate is too short for a window to save anything."""
    decode = n_tokens - 1
    if window < 1 or decode < 2 * window:
        return None
    return 1 + (decode - window) // 2


def profile_window(run: Callable[[Callable[[int], None]], Any], n_tokens: int, *, api: tuple[Any, ...],
                   window: int = DEFAULT_WINDOW, activity: str = "cuda",
                   sync: Callable[[], None] = lambda: None) -> WindowProfile:
    """Run ``run(on_step)`` once, profiling setup + prefill and ``window`` decode steps.

    ``run`` must call ``on_step(i)`` once the ``i``-th new token exists (``i = 1 .. n_tokens``; a
    call with ``i = 0`` for the prompt is allowed). ``api`` is :func:`~pytest_quantperf.gpu.kernel_time._raw_api`'s
    tuple. Each segment is closed after a device sync, so no kernel straddles an edge.
    """
    from .kernel_time import _activity, sum_device_work

    a = window_start(n_tokens, window)
    if a is None:
        raise ValueError(f"a window of {window} decode steps needs at least {2 * window + 1} new tokens, "
                         f"got {n_tokens}")
    config, _, _, prepare, enable, disable = api
    acts, dev, kinds = _activity(api, activity)
    raws: list[Any] = []
    on = [False]
    last = [0]  # the highest step the generate reported

    switch = [0.0]

    def start() -> None:
        sync()
        t = time.perf_counter()
        prepare(config, acts)
        enable(config, acts)
        on[0] = True
        switch[0] += time.perf_counter() - t

    def stop() -> None:
        sync()
        t = time.perf_counter()
        on[0] = False
        raws.append(disable())
        switch[0] += time.perf_counter() - t

    def on_step(i: int) -> None:
        last[0] = max(last[0], i)
        window_step(i, a, window, lambda: on[0], start, stop)

    start()
    t0 = time.perf_counter()
    try:
        result = run(on_step)
        sync()
        t1 = time.perf_counter()
    finally:
        if on[0]:
            stop()  # also when run() raised: a profiler left on would slow every later run
    if len(raws) != 2 or last[0] < a + window:
        raise RuntimeError(f"the generate reported steps up to {last[0]} of {n_tokens}: "
                           "the window was not profiled (does the backend call on_step per token?)")
    (pre_ns, pre_n), (win_ns, win_n) = (sum_device_work(r.events(), device_type=dev, kinds=kinds) for r in raws)
    t2 = time.perf_counter()
    step_ms = win_ns / 1e6 / window
    return WindowProfile(gpu_ms=pre_ns / 1e6 + step_ms * (n_tokens - 1), n_events=pre_n + win_n,
                         wall_ms=(t1 - t0) * 1e3, prefill_ms=pre_ns / 1e6, decode_ms_per_step=step_ms,
                         window=window, n_tokens=n_tokens, collect_ms=(t2 - t1) * 1e3,
                         switch_ms=switch[0] * 1e3, result=result)


def profile_generate(backend: Any, prepared: Any, n_tokens: int, device: Any, *,
                     window: int = DEFAULT_WINDOW) -> Any:
    """Kernel time of one ``backend.run(prepared, n_tokens)`` on ``device``: from a decode window
    where the backend reports its steps (``step_hook``), the generate is long enough and torch has
    the raw kineto API; else the whole generate profiled (:func:`pytest_quantperf.gpu.profile_kernels`)."""
    from .kernel_time import _raw_api, _require_cuda, _require_events, profile_kernels

    api = _raw_api()
    if (window and getattr(backend, "step_hook", False) and api is not None
            and window_start(n_tokens, window) is not None):
        torch = _require_cuda()
        prof = profile_window(lambda f: backend.run(prepared, n_tokens, on_step=f), n_tokens, api=api,
                              window=window, sync=lambda: torch.cuda.synchronize(device))
        _require_events(prof.n_events, "the generate")
        return prof
    return profile_kernels(lambda: backend.run(prepared, n_tokens), device)
