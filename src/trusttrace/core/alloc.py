"""Keep glibc from handing large freed blocks back to the kernel between forward passes.

Each forward pass allocates tens of MB of temporaries per op. With glibc's defaults those come from fresh
``mmap`` pages and go back on free, so every op first pays page faults on its output (measured here: the
same extraction 1.4–1.5× slower). Raising the mmap and trim thresholds makes freed blocks reusable; peak
memory stays what the largest forward pass needs. Set ``TRUSTTRACE_KEEP_FREED_MEMORY=0`` to leave glibc's
defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter ids (malloc.h)
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the reusable heap


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the thresholds once per process; True when glibc accepted them."""
    if os.environ.get("TRUSTTRACE_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):  # not glibc (e.g. musl)
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    log.debug("glibc mallopt thresholds %s", "set" if ok else "refused")
    return ok
