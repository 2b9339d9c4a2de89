"""What the GPU itself says: NVML state and energy, CUPTI kernel time, and the roofline bandwidth.

Wall-clock timings on a shared host drift by 10–20 % from run to run while the GPU's own kernel
time stays within a fraction of a percent, so the measuring code takes both. Everything here is
read only: clocks and power limits are never changed.

One module per concern: ``nvml`` (state, clock-event reasons and throttle flags, the torch to
NVML index mapping, device info, energy), ``kernel_time`` (CUPTI kernel time through kineto's
raw events or ``torch.profiler``), ``window`` (the same from the prefill and a window of decode
steps of one otherwise plain generate: what measurements use), ``roofline`` (bandwidth, KV-cache bytes, utilisation); this
module hands on every name callers use. torch and pynvml are imported inside functions:
importing this package costs nothing and works on machines without either.
"""
from __future__ import annotations

from .kernel_time import (DEVICE_WORK_KINDS, PATH_PROFILER, PATH_RAW, KernelProfile,  # noqa: F401
                          gpu_kernel_time_ms, kernel_time_us, profile_kernels,
                          sum_device_work)
from .nvml import (CLOCK_REASON_BITS, HW_SLOWDOWN_REASONS, MIB, POWER_REASONS,  # noqa: F401
                   THERMAL_REASONS, THROTTLE_FLAGS, THROTTLE_REASONS, EnergyMeter, GpuInfo, GpuState,
                   Nvml, decode_clock_reasons, is_throttled,
                   map_to_nvml_index, throttle_flags)
from .window import PATH_WINDOW, WindowProfile, profile_generate, profile_window, window_start  # noqa: F401
from .roofline import (bw_util, bytes_per_token, kv_cache_bytes_per_token,  # noqa: F401
                       measure_bandwidth_gbs, text_config)

