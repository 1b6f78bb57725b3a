"""What this machine offers a run: native bf16 on the CPU, the cores the process may use,
the CPU's name. Detected, never assumed: a CPU without bf16 units runs bf16 autocast
emulated, slower than fp32, so ``--precision auto`` picks bf16 only where it is native."""
from __future__ import annotations

import functools
import math
import os
import platform
from pathlib import Path

import torch

from .utils import threads_text

# CPU flags of the instructions that compute in bf16 natively (Intel AMX tiles, AVX512-BF16
# dot products on Intel Cooper Lake+ and AMD Zen 4+)
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_units(flags: set[str] | None = None) -> list[str]:
    """The CPU's native bf16 instruction sets (``amx_bf16``, ``avx512_bf16``); empty where
    bf16 would be emulated or oneDNN cannot use them."""
    flags = cpu_flags() if flags is None else flags
    units = [f for f in BF16_FLAGS if f in flags]
    if units and not _onednn_bf16():
        return []
    return units


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_precision(precision: str, device: torch.device) -> str:
    """What ``precision`` means on ``device``: ``bf16`` (autocast) or ``fp32``. ``auto`` is
    bf16 on CUDA and on CPUs with native bf16 units, fp32 elsewhere."""
    if precision in ("bf16", "fp32"):
        return precision
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_bf16_units():
        return "bf16"
    return "fp32"


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max`` or v1 ``cfs_quota``), in cores."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 else None
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``), capped by its
    cgroup quota (containers, schedulers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def configure_threads() -> int:
    """Set torch's intra-op threads to the cores available, unless the user chose with
    ``OMP_NUM_THREADS`` (or ``torch.set_num_threads``, seen as a count below the default).
    Returns the number in use."""
    if not os.environ.get("OMP_NUM_THREADS"):
        cores = available_cores()
        if torch.get_num_threads() > cores:  # torch counts the machine's cores, not ours
            torch.set_num_threads(cores)
    return torch.get_num_threads()


def machine_name(device: torch.device) -> str:
    """The device in words for a result's header: the GPU's name, or the CPU's with its threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({threads_text()})"


def describe_cpu() -> dict[str, object]:
    """The CPU facts a timing needs beside it (``environment.json``, bench results)."""
    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16_units": cpu_bf16_units(), "cores_available": available_cores(),
            "threads": torch.get_num_threads()}


def load_average() -> float | None:
    """The machine's 1-minute load average (runnable threads), None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_usage(cpu_seconds: float) -> dict[str, float | int | None]:
    """What a timed region's wall time needs beside it on a shared machine: the process's
    CPU seconds (all threads), its threads, and the load the machine was under."""
    return {"cpu_seconds": round(cpu_seconds, 3), "threads": torch.get_num_threads(), "load": load_average()}
