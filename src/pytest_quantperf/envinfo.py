"""Where a run happened: hardware, software versions and git state.

``hardware_id`` is the key that decides whether speed figures may be compared at all: two runs
compare timings only when their ids are equal.  It is built from what changes speed (GPU model
and count, or CPU model and usable cores), not from what doesn't (host name, driver patch).

Nothing heavy is imported: package versions come from ``importlib.metadata``; GPU facts come
from NVML (``nvidia-ml-py``) or, when torch is already loaded, from ``torch.cuda``.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import sys
from typing import Any

__all__ = ["fingerprint", "git_info", "git_process", "hardware_id", "slugify", "cpu_model", "gpu_info", "run_git"]

_PACKAGES = ("torch", "transformers", "bitsandbytes", "accelerate")


def slugify(text: str, max_len: int = 48) -> str:
    """Lower-case ASCII slug: ``"NVIDIA H100 80GB HBM3"`` → ``"nvidia-h100-80gb-hbm3"``."""
    s = text.lower()
    s = re.sub(r"\((r|tm|c)\)", " ", s)
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    s = re.sub(r"-{2,}", "-", s)
    return (s[:max_len].rstrip("-") or "unknown")


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip() or "unknown"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _visible_indices(count: int) -> list[int]:
    """NVML ignores CUDA_VISIBLE_DEVICES; apply it when it lists plain indices."""
    from ._util.cuda_visible import visible_entries

    entries = visible_entries()
    if entries is None:
        return list(range(count))
    if not all(x.isdigit() for x in entries):
        return list(range(count))  # UUIDs or MIG ids: cannot map, report all
    return [int(x) for x in entries if int(x) < count]


def gpu_info(device: str | None = None) -> dict[str, Any]:
    """GPU names, total memory (MiB), driver and CUDA version of the GPUs ``device`` uses.

    ``device`` ``"cuda:N"`` means that GPU alone; ``None``, ``"auto"`` or ``"cuda"`` all visible
    GPUs; ``"cpu"`` none.  Returns an empty ``gpus`` list when there is no usable GPU.
    """
    out: dict[str, Any] = {"gpus": [], "driver": None, "cuda": None}
    if device == "cpu" or (device or "").startswith(("mps", "xpu")):
        return out
    index = None
    if device and device.startswith("cuda:"):
        try:
            index = int(device.split(":", 1)[1])
        except ValueError:
            index = None
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
        try:
            if torch.cuda.is_available():
                idx = [index] if index is not None else list(range(torch.cuda.device_count()))
                for i in idx:
                    p = torch.cuda.get_device_properties(i)
                    out["gpus"].append({"name": p.name, "memory_mb": int(p.total_memory // 2**20)})
        except Exception:  # a broken CUDA setup must not break a run's bookkeeping
            out["gpus"] = []
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            out["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
            if out["cuda"] is None:
                v = int(pynvml.nvmlSystemGetCudaDriverVersion())
                out["cuda"] = f"{v // 1000}.{(v % 1000) // 10}"
            if not out["gpus"]:
                count = pynvml.nvmlDeviceGetCount()
                vis = _visible_indices(count)
                idx = [vis[index]] if index is not None and index < len(vis) else vis
                for i in idx:
                    h = pynvml.nvmlDeviceGetHandleByIndex(i)
                    name = pynvml.nvmlDeviceGetName(h)
                    mem = pynvml.nvmlDeviceGetMemoryInfo(h).total
                    out["gpus"].append({"name": name.decode() if isinstance(name, bytes) else str(name),
                                        "memory_mb": int(mem // 2**20)})
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library, no driver, no GPU: a CPU machine
        pass
    return out


def hardware_id(gpus: list[dict[str, Any]], cpu: str, cores: int) -> str:
    """``cuda-nvidia-h100-80gb-hbm3`` (``-xN`` for N GPUs), or ``cpu-<cpu model>-<cores>c``."""
    if gpus:
        names = sorted({slugify(g["name"]) for g in gpus})
        hid = "cuda-" + "+".join(names)
        return hid + (f"-x{len(gpus)}" if len(gpus) > 1 else "")
    model = slugify(re.sub(r"\bcpu\b", " ", cpu, flags=re.I))
    return f"cpu-{model}-{cores}c"


def fingerprint(device: str | None = None) -> dict[str, Any]:
    """The environment block of a run document (``env``), including ``hardware_id``."""
    g = gpu_info(device)
    cpu = cpu_model()
    cores = _usable_cpus()
    gpus = g["gpus"]
    env: dict[str, Any] = {
        "gpu": gpus[0]["name"] if gpus else None,
        "gpu_count": len(gpus),
        "gpu_memory_mb": gpus[0]["memory_mb"] if gpus else None,
        "gpus": gpus,
        "driver": g["driver"],
        "cuda": g["cuda"],
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": cores,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device": device,
    }
    for pkg in _PACKAGES:
        env[pkg] = _version(pkg)
    try:
        import psutil

        env["host_memory_mb"] = int(psutil.virtual_memory().total // 2**20)
    except Exception:
        env["host_memory_mb"] = None
    env["hardware_id"] = hardware_id(gpus, cpu, cores)
    return env


def git_process(path: str | os.PathLike[str], *args: str,
                timeout: float = 10) -> subprocess.CompletedProcess[str] | None:
    """``git -C path args...`` run to its end (exit status, stdout, stderr); None when git is missing or hangs.

    The one place git is started: :func:`run_git` (and so :func:`git_info`) and ``quantperf ab``'s
    worktrees (:mod:`pytest_quantperf.ab.run`) go through it.
    """
    try:
        return subprocess.run(["git", "-C", os.fspath(path), *args], capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def run_git(path: str, *args: str, timeout: float = 10) -> str | None:
    """``git -C path args...``'s stripped output; None when git is missing, fails or hangs."""
    r = git_process(path, *args, timeout=timeout)
    return r.stdout.strip() if r is not None and r.returncode == 0 else None


def git_info(path: str | os.PathLike[str] = ".") -> dict[str, Any] | None:
    """``{"commit", "branch", "dirty"}`` of the repository holding ``path``; None outside one.

    A detached HEAD (as CI checks out) takes its branch from ``GITHUB_HEAD_REF`` or
    ``GITHUB_REF_NAME`` when set, else ``None``.  Untracked files do not make it dirty.
    """
    p = os.fspath(path)
    commit = run_git(p, "rev-parse", "--verify", "-q", "HEAD")
    if commit is None:
        inside = run_git(p, "rev-parse", "--is-inside-work-tree")
        if inside != "true":
            return None
    branch = run_git(p, "rev-parse", "--abbrev-ref", "HEAD") if commit else run_git(p, "symbolic-ref", "--short", "HEAD")
    if branch in (None, "HEAD"):
        branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or None
    status = run_git(p, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or None, "branch": branch, "dirty": bool(status) if status is not None else None}
