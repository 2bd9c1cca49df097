"""A local model's memory, on the host side: whether its weights may be locked in RAM (mlock),
whether the OS refused anyway, and handing a closed model's heap back to the OS."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable


def has_cap_ipc_lock() -> bool:
    """Does this process hold CAP_IPC_LOCK (bit 14 of CapEff)? If we can't tell, let llama.cpp try:
    a refused mlock shows up in its log and is reported all the same."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 14 & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def mlock_allowed(size: int) -> tuple[bool, str]:
    """Can we mlock ``size`` bytes? Raise RLIMIT_MEMLOCK's soft limit if the hard one allows."""
    try:
        import resource
    except ImportError:  # Windows: llama.cpp uses VirtualLock, let it try
        return True, ""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY or soft >= size:
        return True, ""
    if hard == resource.RLIM_INFINITY or hard >= size:
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
            return True, ""
        except (ValueError, OSError):
            pass
    if has_cap_ipc_lock():  # CAP_IPC_LOCK ignores the limit
        return True, ""
    return False, f"RLIMIT_MEMLOCK is {soft} bytes, the model needs {size}"


def plan_mlock(wanted: bool, size: int) -> tuple[bool, str]:
    """Whether to ask llama.cpp for mlock, and the status to show: "on", "off" or
    "off (fallback: reason)" when it was wanted but cannot be had."""
    if not wanted:
        return False, "off"
    allowed, why_not = mlock_allowed(size)
    return (True, "on") if allowed else (False, f"off (fallback: {why_not})")


def refused_by_os(native_lines: Iterable[str]) -> bool:
    """Did llama.cpp log that the OS refused to lock the model?"""
    return any("failed to mlock" in line for line in native_lines)


REFUSED_BY_OS = "off (fallback: the OS refused mlock)"


def release_freed_memory() -> None:
    """Hand the freed model's heap back to the OS (glibc's malloc_trim). Models load on worker
    threads, so their buffers live in per-thread malloc arenas that glibc rarely trims by itself;
    without this, rotating models grows a kernel's memory by about a megabyte per load."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def cpu_has_amx() -> bool:
    """Does this CPU have Intel AMX (the ``amx_int8`` flag in /proc/cpuinfo)?"""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_int8" in line.split()
    except OSError:
        pass
    return False


def use_extra_buffers() -> bool:
    """Should llama.cpp put weights in its extra CPU buffer types (AMX, repacked layouts)?

    Not on an AMX CPU: llama-cpp-python 0.3.36 (and llama.cpp's own ``llama-bench``, whose
    ``--repack 0`` avoids it) segfaults in ``llama_decode`` on Gemma 3 270M Q4_K_M there, while
    the same load without them answers correctly. ``LLM_MAGIC_EXTRA_BUFTS=1`` (or ``0``) decides
    instead. Only llm_magic's own loads are affected, never a ``Llama`` the user builds."""
    forced = os.environ.get("LLM_MAGIC_EXTRA_BUFTS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return not cpu_has_amx()
