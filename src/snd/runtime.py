"""Process-level CPU settings for training: the C allocator's reuse of large blocks, and torch's thread count.

Nothing here runs at import; the trainer and the benchmarks call these functions once at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def reuse_large_allocations(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Let glibc's malloc keep and reuse freed blocks of up to ``mmap_threshold`` bytes (default 1 GiB).

    By default glibc serves every block above 128 KiB-32 MiB (an adaptive threshold) with a fresh ``mmap``
    and unmaps it on free, so each large tensor of a training step (features ``[N, H*W, C]``, logits
    ``[P, 65536]``) is zero-filled by the kernel page by page, ~3 us per 4 KiB page fault: 720k faults,
    about a third of a ViT-S CPU step. Raising the mmap threshold (and the trim threshold, so freed
    memory at the heap's top is not handed straight back) makes later steps reuse the same memory.
    The process keeps its peak heap instead of returning it between steps, which a training loop
    reaches every step anyway. This is ``mallopt(M_MMAP_THRESHOLD)`` / ``mallopt(M_TRIM_THRESHOLD)``,
    the same as exporting ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` before start.

    A no-op (returns False) off Linux/glibc, and when the user already set glibc's malloc environment
    variables or ``GLIBC_TUNABLES`` (their choice wins). Returns True when both settings were applied.
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _GLIBC_ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        # gnu_get_libc_version exists only in glibc (musl has a mallopt stub that ignores these parameters).
        libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


def default_cpu_threads(device: torch.device | str = "cpu") -> int | None:
    """Set torch's intra-op threads to 1 for a CPU training process unless the user chose (``OMP_NUM_THREADS``).

    On a CPU shared with other work, libgomp's thread team waits at every op's barrier for a thread the
    kernel has descheduled: on the loaded 2-core development machine 2 threads made the embedded default's
    step 12-29x slower in wall time than 1 (BENCHMARKS.md "Threads"); they help only while the other core is
    idle. One thread per process degrades gracefully. ``accelerate launch`` exports ``OMP_NUM_THREADS`` itself
    (physical cores / processes) unless given ``--num_cpu_threads_per_process 1``, and that value is respected here
    like any other; a bare ``python scripts/distill.py`` gets 1. Export ``OMP_NUM_THREADS=N`` to use N.

    Returns the thread count set, or None when nothing changed (a non-CPU device, or the user's setting).
    """
    if torch.device(device).type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    torch.set_num_threads(1)
    return 1
