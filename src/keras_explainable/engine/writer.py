"""Streaming maps to a ``.npy`` file, one batch at a time (``explain(..., maps_file=)``)."""

from __future__ import annotations

import os
import secrets
import struct
from pathlib import Path

import numpy as np


def _npy_header(dtype: np.dtype, shape: tuple, length: int | None = None) -> bytes:
    """A .npy (format 1.0) header for a C-ordered array, padded to ``length`` bytes.

    Without ``length``, the header is padded to a multiple of 64 bytes (as numpy
    writes it); a header rewritten later with another shape keeps its size.
    """
    text = repr(
        {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": tuple(int(d) for d in shape),
        }
    )
    preamble = 10  # magic string, version and the uint16 length of the header text
    if length is None:
        length = -(-(preamble + len(text) + 1) // 64) * 64
    padding = length - preamble - len(text) - 1
    if padding < 0:  # cannot happen: the reserved header has room for 20 digits
        raise RuntimeError(f"The .npy header of shape {shape} does not fit in {length} bytes.")
    text = text + " " * padding + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


class MapsWriter:
    """Writes maps batch by batch into a ``.npy`` file; memory stays one batch.

    The rows are appended to a temporary file next to ``path`` whose header
    reserves room for any number of samples; :meth:`close` writes the real shape
    into the header and moves the file to ``path``, so ``path`` only ever holds a
    complete, valid ``.npy``. Plain writes (rather than a writable memory map)
    keep the written pages out of the process' resident memory.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows = 0
        self._dtype = None
        self._sample_shape = None
        self._header_length = None
        # Created like np.save's files (0o666 less the umask), unlike mkstemp's 0o600.
        for _ in range(100):
            temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
            try:
                handle = os.open(temporary, _CREATE_FLAGS, 0o666)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 collisions of 32 random bits
            raise FileExistsError(f"Could not create a temporary file next to '{path}'.")
        self._temporary = temporary
        self._file = os.fdopen(handle, "wb")

    def write(self, maps: np.ndarray) -> None:
        if self._dtype is None:
            self._dtype = maps.dtype
            self._sample_shape = tuple(maps.shape[1:])
            reserved = _npy_header(self._dtype, (10**20 - 1, *self._sample_shape))
            self._header_length = len(reserved)
            self._file.write(reserved)
        elif tuple(maps.shape[1:]) != self._sample_shape:  # the engine checks this before
            raise ValueError(
                f"Maps of shape {maps.shape[1:]} cannot follow maps of shape "
                f"{self._sample_shape} in one .npy file."
            )
        self._file.write(np.ascontiguousarray(maps, dtype=self._dtype).data)
        self.rows += len(maps)

    def close(self) -> np.memmap:
        """Finish the file; return it memory-mapped, read-only."""
        header = _npy_header(self._dtype, (self.rows, *self._sample_shape), self._header_length)
        self._file.seek(0)
        self._file.write(header)
        self._file.close()
        try:  # a hard link fails on an existing file: a file made meanwhile is kept
            os.link(self._temporary, self.path)
        except FileExistsError:
            raise ValueError(
                f"`maps_file` '{self.path}' was created by something else while explaining; "
                "explain never overwrites a file. Pick another name."
            ) from None
        except (OSError, AttributeError, NotImplementedError):  # no hard links here
            os.replace(self._temporary, self.path)
        else:
            os.remove(self._temporary)
        return np.load(self.path, mmap_mode="r")

    def abort(self) -> None:
        """Drop the partial file (after an error)."""
        self._file.close()
        try:
            os.remove(self._temporary)
        except OSError:
            pass


class InputsWriter:
    """``maps_file`` for a multi-input model: one :class:`MapsWriter` per explained input.

    A method that returns one map per input (gradients, perturbations) writes
    each input's maps to ``<stem>.<input name>.npy`` next to ``maps_file``
    (``paths(positions)`` names them); one that returns a single map (CAM)
    writes ``maps_file`` itself. The files are created on the first batch, when
    it is known which inputs have maps; each is checked with ``check(path)``.
    """

    def __init__(self, path: Path, paths, check, pack):
        self._path = path
        self._paths = paths
        self._check = check
        self._pack = pack
        self._writers = None  # position -> MapsWriter, or None -> MapsWriter for one map

    def write(self, maps) -> None:
        if self._writers is None:
            if isinstance(maps, list):
                positions = [p for p, m in enumerate(maps) if m is not None]
                targets = self._paths(positions)
                self._writers = {}
                for position in positions:
                    self._check(targets[position])
                    self._writers[position] = MapsWriter(targets[position])
                self._count = len(maps)
            else:
                self._writers = {None: MapsWriter(self._path)}
        for position, writer in self._writers.items():
            writer.write(maps if position is None else maps[position])

    def close(self):
        if None in self._writers:
            return self._writers[None].close()
        closed = [None] * self._count
        for position, writer in self._writers.items():
            closed[position] = writer.close()
        return self._pack(closed)

    def abort(self) -> None:
        for writer in (self._writers or {}).values():
            writer.abort()
