"""The C heap's policy for large tensors (glibc ``mallopt``).

glibc serves blocks of 128 KiB or more with ``mmap`` and gives them back to the kernel when they
are freed, so every large tensor a bound pass allocates is fresh memory that the kernel zero-fills
page by page on first touch. A backward pass over windows (TinyYOLO: 774 rows of 16 x 42 x 42
coefficients, 87 MB) allocates such tensors at every step; the page faults were 75% of an
elementwise product's time there (48 ms against 11 ms, one thread) and half of the whole pass.
:func:`keep_freed_memory` keeps large blocks on the heap and freed memory in the process for
reuse, which is what a long-running verifier wants; the cost is that the process keeps its peak
memory (up to ``limit`` bytes of it beyond what a later allocation reuses) until
:func:`release_freed_memory` (a verifier's worker: after each instance)."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # malloc.h
LIMIT = (1 << 30) - 1  # freed heap top kept (bytes; mallopt takes a C int)


def keep_freed_memory(limit: int = LIMIT) -> bool:
    """Serve every block from the heap (no ``mmap``) and keep up to ``limit`` freed bytes at its
    top; for this process, from now on. Whether the policy was set (glibc on Linux only;
    elsewhere the allocator's own policy stays, and nothing changes but speed)."""
    if not 0 <= limit < 2**31:
        raise ValueError(f"limit must be a byte count under 2**31, got {limit}")
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, limit))


def release_freed_memory() -> bool:
    """Give the heap's free memory back to the kernel (``malloc_trim``); whether it ran."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def _glibc():
    """The C library, where it is glibc on Linux; else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
