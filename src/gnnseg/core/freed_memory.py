"""Keeping freed memory in the process, so that the next large array does not start from fresh pages.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MB) with a new ``mmap`` and returns it to
the system when freed, and gives back the top of its heap whenever more than the trim threshold is free there. A
U-Net forward allocates and frees tens of such blocks (each layer's output), so every one of them arrives as untouched
pages, which the kernel faults in and zeroes one page at a time: a forward of nnU-Net's 2D ISBI network takes 0.56 s
that way on a 2-core CPU and 0.49 s without, of its CT network 1.09 s and 0.80 s
(``benchmarks/results/nnunet_dropin.md``). Telling ``malloc`` to take large blocks from its heap and to keep what is
freed there makes the second and every later forward reuse pages already mapped.

A training step gains as much (``benchmarks/results/unet_freed_memory.md``: 0.70x the time in 2D, 0.74x in 3D).

This is a setting of the whole process: ``gnnseg seg predict`` and ``gnnseg seg train`` apply it, library users may
call :func:`keep_freed_memory` once themselves. Its cost is that memory the process frees stays reserved for it (up
to 1 GiB free at the heap's top; blocks freed below the top cannot be returned anyway), and a heap that fragments can
grow past what separate mappings would have needed. On a C library other than glibc nothing changes; under an
allocator preloaded in glibc's place (jemalloc, tcmalloc) the call reaches glibc's ``mallopt`` and changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

_M_TRIM_THRESHOLD = -1   # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4
_KEEP_UP_TO = 1 << 30    # free memory at the top of the heap kept before any of it is returned (bytes)


@cache
def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` serve large blocks from its heap and keep freed memory (once per process); True when
    the setting took effect, False where the C library is not glibc or refused it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    results = [mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, _KEEP_UP_TO)]   # both tried, whatever the first
    return all(result == 1 for result in results)
