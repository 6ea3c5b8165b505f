"""Host memory on a CPU run: keep the resident size close to the live tensors (glibc on Linux; elsewhere no-ops).

    >>> map_large_blocks()      # before training or generating (a no-op with CUDA)
    >>> return_freed_memory()   # between two phases of one process (the quick start's training and replies)

glibc's malloc serves a block from the heap unless it is larger than its mmap threshold, which starts at
128 KiB and rises to the size of every mmapped block freed, up to 32 MiB. A training step frees tensors of
every size, so after a few steps nearly all of them come from the heap, whose freed pages stay resident,
fragmented between live ones: the quick start's resident size crept from 1,554 to 2,192 MiB over its
first five steps, and its peak, at the end of training, was 3.00 GiB. With the threshold fixed at 4 MiB,
tensors over it are mapped and unmapped, so their pages go back to the system when freed: five steps
peaked at 2,184-2,197 MiB against 2,217-2,344 MiB, at the same speed, and the whole quick start at 2.66 GiB.
Lower thresholds cost time (1 MiB: the quick start's replies took 97 s instead of 77) and saved nothing
more (docs/benchmarks.md).
"""

import ctypes
import gc

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 4 << 20  # 4 MiB: a 576-wide row of a few thousand tokens and up; small tensors stay on the heap


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:  # not Linux with glibc: nothing to set
        return None


def map_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """On a CPU run, fix glibc's mmap threshold at `threshold` bytes; True when set (False with CUDA, whose
    tensors are not malloc's, or without glibc)."""
    import torch

    libc = None if torch.cuda.is_available() else _glibc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1)


def return_freed_memory() -> None:
    """Free the garbage cycles (a finished trainer's) and hand the heap's free pages back (glibc's malloc_trim)."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
