"""glibc heap tuning for the server process (elsewhere, e.g. macOS or musl, both calls do nothing).

app.py limits the malloc arenas once at start; handlers that held large audio buffers give the freed pages back
after their request.
"""

from __future__ import annotations

import ctypes

_M_ARENA_MAX = -8


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


_LIBC = _libc()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Gradio runs handlers on a pool of threads; glibc gives each thread its own malloc arena, so the server's
    memory would grow with the number of concurrent clients and stay there. Two arenas keep it flat."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, arenas)


def release_memory() -> None:
    """Hand freed heap pages back to the OS after a request (large audio buffers would otherwise linger)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
