"""Turning what users pass as ``x`` (and ``y``) into fixed-size numpy batches.

Supported inputs: numpy arrays and array-likes, backend tensors, ``tf.data``
datasets, ``keras.utils.PyDataset``, torch ``DataLoader``s and Python
generators/iterators. Dataset elements are ``x`` or ``(x, units, ...)``.
No framework is imported here: datasets are recognized by duck typing.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterator

import keras
import numpy as np

from .pages import page_releaser as _page_releaser


def to_numpy(value) -> np.ndarray:
    """A numpy copy-free view of an array, a backend tensor or a foreign tensor."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:
        pass
    if hasattr(value, "detach"):  # a torch tensor under another Keras backend
        value = value.detach().cpu()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def _module(value) -> str:
    return type(value).__module__ or ""


def is_tf_dataset(value) -> bool:
    return _module(value).startswith("tensorflow") and hasattr(value, "as_numpy_iterator")


def is_torch_loader(value) -> bool:
    return _module(value).startswith("torch.utils.data")


def is_array_like(value) -> bool:
    if isinstance(value, np.ndarray):
        return True
    if isinstance(value, (list, tuple)):
        return True
    return hasattr(value, "shape") and hasattr(value, "dtype") and not is_tf_dataset(value)


def _split_element(element, layout=None):
    """``x`` or ``(x, units, ...)`` -> (x, units or None).

    For a multi-input model (``layout``), ``x`` is a dict, or a list/tuple of one
    array per input; an element whose first item is such a structure is
    ``(x, units, ...)``.
    """
    if layout is not None:
        if isinstance(element, dict):
            return layout.flatten(element, "The dataset's inputs"), None
        if (
            isinstance(element, (tuple, list))
            and element
            and isinstance(element[0], (dict, list, tuple))
        ):
            units = element[1] if len(element) > 1 else None
            return layout.flatten(element[0], "The dataset's inputs"), units
        return layout.flatten(element, "The dataset's inputs"), None
    if isinstance(element, dict):
        raise TypeError(
            "Dataset elements that are dicts are not supported; yield `x` or `(x, units)`."
        )
    if isinstance(element, (tuple, list)):
        if len(element) == 0:
            raise ValueError(
                "The dataset yielded an empty tuple; yield `x` or `(x, units)` batches."
            )
        if len(element) == 1:
            return element[0], None
        return element[0], element[1]
    return element, None


class Columns:
    """One numpy array per model input, sliced, padded and joined as one batch.

    ``names``: the input names when the model takes a dict (a KerasHub model's
    ``{"token_ids", "padding_mask", ...}``); :meth:`feed` then gives a dict.
    """

    def __init__(self, arrays, names=None):
        self.arrays = list(arrays)
        self.names = names

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, rows):
        return Columns((a[rows] for a in self.arrays), self.names)

    @property
    def shape(self) -> tuple:
        """``(samples, sample shapes)``: ``shape[1:]`` compares the batches' layouts."""
        return (len(self), tuple(tuple(a.shape[1:]) for a in self.arrays))

    @property
    def ndim(self) -> int:
        return min(a.ndim for a in self.arrays)

    def map(self, fn) -> Columns:
        return Columns((fn(a) for a in self.arrays), self.names)

    def feed(self, fn=None):
        """The columns as the model takes them (``fn`` applied): a list, or a dict by name."""
        arrays = self.arrays if fn is None else [fn(a) for a in self.arrays]
        return arrays if self.names is None else dict(zip(self.names, arrays))

    @staticmethod
    def concatenate(parts) -> Columns:
        arrays = (np.concatenate(arrays) for arrays in zip(*(p.arrays for p in parts)))
        return Columns(arrays, parts[0].names)


def positive_int(name: str, value, none_means: str):
    """``value`` as a positive int (numpy integers welcome), or None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be a positive int or None ({none_means}); got "
            f"{value!r} of type {type(value).__name__}. Pass e.g. {name}={_example(value)}."
        )
    if value <= 0:
        raise ValueError(
            f"`{name}` must be a positive int or None ({none_means}); got {value}. "
            f"Pass e.g. {name}={_example(value)}."
        )
    return int(value)


def _example(value) -> int:
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 32


class Source:
    """An iterable of ``(x_batch, units_batch)`` numpy pairs, with what is known of its size.

    Attributes:
        array: the inputs as one numpy array, when ``x`` was an array (else None).
        num_batches: the number of batches, when known.
        num_samples: the number of samples, when known.
        batch_size: the size every batch is cut or padded to.
        requested_batch_size: the ``batch_size`` asked for (arrays: 32 by default),
            which ``batch_size`` is smaller than for a shorter array.
    """

    def __init__(self, x, y=None, batch_size=None, steps=None, layout=None):
        steps = positive_int("steps", steps, "None draws every batch")
        batch_size = positive_int("batch_size", batch_size, "None means 32 for arrays")
        self._layout = layout  # a multi-input model: batches are Columns, one per input
        if layout is not None and isinstance(x, (dict, list, tuple)):
            x = layout.flatten(x)  # checked against model.inputs; sliced like an array
        elif isinstance(x, (str, bytes, dict)) or x is None:
            raise TypeError(
                f"Cannot explain inputs of type {type(x).__name__}: pass a numpy array or tensor "
                "(samples, *spatial, channels), a tf.data.Dataset, a keras.utils.PyDataset, a "
                "torch DataLoader or a generator of such batches."
            )
        self._y = None if y is None else _as_units(y)
        self.array = None
        self.num_samples = None
        self.num_batches = None
        self.steps = steps

        if isinstance(x, Columns) or (
            is_array_like(x) and not isinstance(x, (list, tuple)) or _is_array_list(x)
        ):
            self._kind = "array"
            self._x = self.array = x if isinstance(x, Columns) else _as_array(x)
            if self._x.ndim == 0:
                raise ValueError(
                    "`x` is a single number; pass a batch (samples, *spatial, channels)."
                )
            self.num_samples = len(self._x)
            if self.num_samples == 0:
                raise ValueError(
                    f"`x` is empty (shape {self._x.shape}): there is nothing to explain. Pass "
                    "at least one sample."
                )
            # A short array is one batch of its own length (no padding of 4 samples to 32);
            # the engine pads it further only to reuse a step already compiled for a size
            # up to the requested one (`requested_batch_size`).
            self.batch_size = min(batch_size or 32, self.num_samples)
            self.requested_batch_size = batch_size or 32
            self.num_batches = -(-self.num_samples // self.batch_size)
            if steps is not None:
                self.num_batches = min(self.num_batches, steps)
                self.num_samples = min(self.num_samples, steps * self.batch_size)
            return

        self._x = x
        self.batch_size = batch_size  # None: the first batch's size
        self.requested_batch_size = batch_size
        rebatched = batch_size is not None
        if isinstance(x, keras.utils.PyDataset):
            self._kind = "pydataset"
            length = x.num_batches
            if length is None and steps is None:
                raise ValueError(
                    f"The {type(x).__name__} has no length (num_batches is None): pass `steps`, "
                    "the number of batches to explain."
                )
            self.num_batches = length if steps is None else min(length or steps, steps)
        elif is_tf_dataset(x):
            self._kind = "iterable"
            cardinality = int(x.cardinality()) if hasattr(x, "cardinality") else -1
            self.num_batches = cardinality if cardinality >= 0 else steps
            if steps is not None and cardinality >= 0:
                self.num_batches = min(cardinality, steps)
        elif is_torch_loader(x) or hasattr(x, "__iter__") or hasattr(x, "__next__"):
            self._kind = "iterable"
            try:
                length = len(x)
            except TypeError:
                length = None
            self.num_batches = steps if length is None else min(length, steps or length)
        else:
            raise TypeError(
                f"Cannot explain inputs of type {type(x).__name__}: pass a numpy array, a tensor, "
                "a tf.data.Dataset, a keras.utils.PyDataset, a torch DataLoader or a generator."
            )
        if rebatched:  # the dataset's elements are re-cut: their count is not the steps'
            self.num_batches = None

    def check_y_rows(self) -> None:
        """For array inputs: ``y`` must give one row of units per sample."""
        if self.array is not None and self._y is not None and len(self._y) != len(self.array):
            raise ValueError(
                f"`y` has {len(self._y)} rows but `x` has {len(self.array)} samples; give one "
                "row of units per sample ((samples,) or (samples, units) integers), or y=None "
                "to explain every unit."
            )

    def _raw_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        if self._kind == "array":
            # Batches are views: an array (memory-mapped or not) is never copied whole.
            release = _page_releaser(self._x)
            size = self.batch_size
            for i in range(self.num_batches):
                rows = slice(i * size, min((i + 1) * size, self.num_samples))
                yield self._x[rows], None if self._y is None else self._y[rows]
                if release is not None:  # the engine is done with the batch: drop its pages
                    release(rows)
            return
        if self._kind == "pydataset":
            elements = (self._x[i] for i in range(self.num_batches or 0))
        elif is_tf_dataset(self._x):
            elements = self._x.as_numpy_iterator()
        else:
            elements = iter(self._x)
        if self.steps is not None:
            elements = itertools.islice(elements, self.steps)
        seen = 0
        for element in elements:
            xb, units = _split_element(element, self._layout)
            if self._layout is None:
                xb = _as_array(xb, "The dataset's inputs")
            if xb.ndim == 0:
                raise ValueError(
                    "The dataset yielded a single number as inputs; yield batches "
                    "(samples, *spatial, channels), or (inputs, units) pairs."
                )
            if self._y is not None:
                if units is not None:
                    raise ValueError(
                        "Both `y` and the dataset's elements give units; pass only one (yield "
                        "inputs alone, or leave y=None)."
                    )
                units = self._y[seen : seen + len(xb)]
                if len(units) != len(xb):
                    raise ValueError(
                        f"`y` has {len(self._y)} rows, fewer than the samples the dataset "
                        "yields; give one row of units per sample."
                    )
            elif units is not None:
                units = _as_units(units)
            seen += len(xb)
            yield xb, units
        if self._y is not None and self.steps is None and seen and seen != len(self._y):
            raise ValueError(
                f"`y` has {len(self._y)} rows but the dataset yielded {seen} samples; give one "
                "row of units per sample."
            )

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Batches of exactly ``batch_size`` rows (only the last may be short).

        A dataset batched otherwise is re-batched: its rows are carried over from
        one element to the next, so every step but the last is full.
        """
        if self._kind == "array":
            yield from self._raw_batches()
            return
        pending_x, pending_units = [], []
        count = 0
        for xb, units in self._raw_batches():
            if len(xb) == 0:
                continue
            if self.batch_size is None:
                self.batch_size = len(xb)
            if pending_x and (
                pending_x[0].shape[1:] != xb.shape[1:]
                or (pending_units[0] is None) != (units is None)
            ):
                yield _join(pending_x, pending_units)  # let the engine report the mismatch
                pending_x, pending_units, count = [], [], 0
            pending_x.append(xb)
            pending_units.append(units)
            count += len(xb)
            while count >= self.batch_size:
                joined_x, joined_units = _join(pending_x, pending_units)
                yield joined_x[: self.batch_size], _rows(joined_units, slice(None, self.batch_size))
                rest = slice(self.batch_size, None)
                pending_x, pending_units = [joined_x[rest]], [_rows(joined_units, rest)]
                count -= self.batch_size
            if count == 0:
                pending_x, pending_units = [], []
        if count:
            yield _join(pending_x, pending_units)


def _rows(units, rows):
    return None if units is None else units[rows]


def _join(xs, units):
    if len(xs) == 1:
        joined_x = xs[0]
    else:
        joined_x = Columns.concatenate(xs) if isinstance(xs[0], Columns) else np.concatenate(xs)
    if units[0] is None:
        return joined_x, None
    if len(units) == 1:
        return joined_x, units[0]
    try:
        return joined_x, np.concatenate(units)
    except ValueError:
        raise ValueError(
            "The dataset yields units of different shapes "
            f"({', '.join(str(u.shape) for u in units)}); every batch must give the same "
            "number of units per sample."
        ) from None


def _as_array(value, what: str = "`x`") -> np.ndarray:
    try:
        return to_numpy(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(
            f"{what} could not be turned into one array ({error}). Stack samples of the same "
            "shape into one (samples, *spatial, channels) array."
        ) from None


def _as_units(y) -> np.ndarray:
    units = _as_array(y, "`y`")
    if units.ndim == 0:
        raise ValueError(
            f"`y` is the single number {units.item()!r}; give one unit per sample, e.g. "
            "np.full(len(x), unit), or a (samples, units) array."
        )
    return units


def _is_array_list(x) -> bool:
    if not isinstance(x, (list, tuple)) or not x:
        return False
    return all(isinstance(item, (np.ndarray, list, tuple, int, float)) for item in x)


def pad_to(array: np.ndarray | None, size: int) -> np.ndarray | None:
    """Pad the first axis to ``size`` by repeating the last row (keeps values finite).

    :class:`Columns` (a multi-input batch) are padded input by input.
    """
    if array is None or len(array) == size:
        return array
    if isinstance(array, Columns):
        return array.map(lambda column: pad_to(column, size))
    widths = [(0, size - len(array))] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, widths, mode="edge")
