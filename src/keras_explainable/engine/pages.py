"""Letting the kernel drop the pages of a memory-mapped ``x`` once its rows are explained."""

from __future__ import annotations

import mmap

import numpy as np

from .. import _compat


def page_releaser(array: np.ndarray):
    """``release(rows)`` for a memory-mapped array: the kernel may drop those rows' pages.

    Reading a ``np.memmap`` (``np.load(..., mmap_mode="r")``) maps its pages into the
    process, and they count as resident memory until the kernel reclaims them:
    reading a file larger than memory would seem to hold all of it. Advising
    ``MADV_DONTNEED`` on the rows already explained unmaps them (a shared file
    mapping loses nothing: the data stays in the file and is read again if touched).
    Returns None (nothing to do) for other arrays, copy-on-write mappings (whose
    private changes that would discard), non-contiguous arrays and platforms
    without ``madvise``.
    """
    mapping = _compat.memmap_mapping(array)  # np.memmap's mapping (shared by its views)
    if (
        not isinstance(array, np.memmap)
        or not isinstance(mapping, mmap.mmap)
        or getattr(array, "mode", None) not in ("r", "r+", "w+")
        or not array.flags.c_contiguous
        or not hasattr(mapping, "madvise")
        or not hasattr(mmap, "MADV_DONTNEED")
        or len(array) == 0
    ):
        return None
    try:
        base = np.frombuffer(mapping, dtype=np.uint8).__array_interface__["data"][0]
    except (TypeError, ValueError, BufferError):
        return None
    start = array.__array_interface__["data"][0] - base
    row_bytes = array.nbytes // len(array)
    page = mmap.PAGESIZE
    size = len(mapping)
    state = {"active": True}

    def release(rows: slice) -> None:
        if not state["active"]:
            return
        low = (start + rows.start * row_bytes) // page * page
        high = min(size, -(-(start + rows.stop * row_bytes) // page) * page)
        if high <= low:
            return
        try:
            mapping.madvise(mmap.MADV_DONTNEED, low, high - low)
        except (OSError, ValueError):
            state["active"] = False  # not supported here: just keep reading

    return release
