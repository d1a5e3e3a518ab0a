"""Keep freed memory inside the process (glibc malloc) instead of handing it back to the kernel.

Why by hand: PyTorch's CPU allocator does not cache memory (only the CUDA one does), so every
training step mallocs and frees the same multi-megabyte activations. glibc serves large blocks
with fresh ``mmap`` calls or trims the top of its heap when they are freed, so the next step
page-faults the same memory back in, one 4 KiB page at a time. glibc raises its mmap threshold
only to the size of the largest block freed so far, so whether a step's tensors fault depends on
what the process allocated before: measured on the DANN step (bf16, batch 64 + 64, 2-core AMD
EPYC virtual machine), a fresh process that had loaded only small data made about 4,700 page
faults per step and ran 44-46 steps/s with glibc's defaults, against about 4 faults and 61-69
steps/s with the policy below; a process that had first loaded full MNIST (big temporaries, so a
high threshold) ran at the same speed either way. The policy makes the fast case the only case.

PyTorch's CPU performance guide cures the same problem by preloading jemalloc or tcmalloc; two
``mallopt`` calls need no extra library and no ``LD_PRELOAD``. The price is that the heap does not
shrink after a peak, which suits a process that trains and exits.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# <malloc.h> parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# glibc's ceiling for the mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): blocks
# below it come from the heap and are reused; larger ones still go straight back to the kernel.
MMAP_THRESHOLD = 32 * 1024 * 1024
# mallopt takes a C int: the largest one, i.e. trim only when over 2 GiB of the heap top is free.
TRIM_THRESHOLD = 2**31 - 1

OPT_OUT_ENV = "VISLAB_SYSTEM_MALLOC"


def retain_freed_memory() -> bool:
    """Make glibc keep freed blocks below 32 MiB for reuse. Process-wide; the ``vislab`` command
    calls it at start-up. Returns whether the policy is in force: False on systems without glibc
    (macOS, Windows, musl) and when the environment variable ``VISLAB_SYSTEM_MALLOC`` is set to a
    non-empty value (the opt-out, for comparing against the defaults)."""
    if os.environ.get(OPT_OUT_ENV) or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    mallopt = ctypes.CDLL(path).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the mmap threshold first: setting either value switches off glibc's dynamic thresholds
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
