"""Handing freed memory back to the operating system.

Freed Python objects, Arrow buffers and tensors go back to their allocators
(pymalloc, Arrow's pool, glibc malloc), which keep the pages for reuse. In a
long scan, or in a worker that sits idle after a large job, those kept pages
are memory no one uses: these calls return them.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys


def release_unused_memory(*, collect: bool = False) -> None:
    """Ask Arrow's pool and glibc to return free pages; with ``collect``, run the garbage collector first."""
    if collect:
        gc.collect()
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        with contextlib.suppress(Exception):
            arrow.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
