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
