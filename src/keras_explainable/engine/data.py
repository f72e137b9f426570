"""Turning what users pass as ``x`` (and ``y``) into fixed-size numpy batches.

Supported inputs: numpy arrays and array-likes, backend tensors, ``tf.data``
datasets, ``keras.utils.PyDataset``, torch ``DataLoader``s and Python
generators/iterators. Dataset elements are ``x`` or ``(x, units, ...)``.
No framework is imported here: datasets are recognized by duck typing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import keras
import numpy as np


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


def _split_element(element):
    """``x`` or ``(x, units, ...)`` -> (x, units or None)."""
    if isinstance(element, dict):
        raise TypeError(
            "Dataset elements that are dicts are not supported; yield `x` or `(x, units)`."
        )
    if isinstance(element, (tuple, list)):
        if len(element) == 0:
            raise ValueError("The dataset yielded an empty tuple.")
        if len(element) == 1:
            return element[0], None
        return element[0], element[1]
    return element, None


class Source:
    """An iterable of ``(x_batch, units_batch)`` numpy pairs, with what is known of its size.

    Attributes:
        num_batches: the number of batches, when known.
        num_samples: the number of samples, when known.
        batch_size: the size every batch is cut or padded to.
    """

    def __init__(self, x, y=None, batch_size=None, steps=None):
        if steps is not None and (not isinstance(steps, int) or steps <= 0):
            raise ValueError(f"`steps` is a positive int, not {steps!r}.")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0
        ):
            raise ValueError(f"`batch_size` is a positive int, not {batch_size!r}.")
        self._y = None if y is None else to_numpy(y)
        self.num_samples = None
        self.num_batches = None
        self.steps = steps

        if is_array_like(x) and not isinstance(x, (list, tuple)) or _is_array_list(x):
            self._kind = "array"
            self._x = to_numpy(x)
            if self._x.ndim == 0:
                raise ValueError("`x` is a scalar; pass a batch `(batch, *spatial, channels)`.")
            self.num_samples = len(self._x)
            if self.num_samples == 0:
                raise ValueError("`x` is empty: there is nothing to explain.")
            self.batch_size = min(batch_size or 32, self.num_samples)
            self.num_batches = -(-self.num_samples // self.batch_size)
            if steps is not None:
                self.num_batches = min(self.num_batches, steps)
                self.num_samples = min(self.num_samples, steps * self.batch_size)
            if self._y is not None and len(self._y) != len(self._x):
                raise ValueError(
                    f"`y` has {len(self._y)} rows but `x` has {len(self._x)} samples; give "
                    "one row of units per sample."
                )
            return

        self._x = x
        self.batch_size = batch_size  # None: the first batch's size
        if isinstance(x, keras.utils.PyDataset):
            self._kind = "pydataset"
            length = x.num_batches
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

    def _raw_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        if self._kind == "array":
            size = self.batch_size
            for i in range(self.num_batches):
                rows = slice(i * size, min((i + 1) * size, self.num_samples))
                yield self._x[rows], None if self._y is None else self._y[rows]
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
            xb, units = _split_element(element)
            xb = to_numpy(xb)
            if xb.ndim == 0:
                raise ValueError("The dataset yielded a scalar; yield batches of inputs.")
            if self._y is not None:
                if units is not None:
                    raise ValueError(
                        "Both `y` and the dataset's elements give units; pass only one."
                    )
                units = self._y[seen : seen + len(xb)]
                if len(units) != len(xb):
                    raise ValueError(
                        f"`y` has {len(self._y)} rows, fewer than the samples the dataset "
                        "yields; give one row of units per sample."
                    )
            elif units is not None:
                units = to_numpy(units)
            seen += len(xb)
            yield xb, units

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Batches of exactly ``batch_size`` rows before padding (the last may be short)."""
        for xb, units in self._raw_batches():
            if self.batch_size is None:
                if len(xb) == 0:
                    continue
                self.batch_size = len(xb)
            for start in range(0, len(xb), self.batch_size):
                stop = start + self.batch_size
                yield xb[start:stop], None if units is None else units[start:stop]


def _is_array_list(x) -> bool:
    if not isinstance(x, (list, tuple)) or not x:
        return False
    return all(isinstance(item, (np.ndarray, list, tuple, int, float)) for item in x)


def pad_to(array: np.ndarray | None, size: int) -> np.ndarray | None:
    """Pad the first axis to ``size`` by repeating the last row (keeps values finite)."""
    if array is None or len(array) == size:
        return array
    widths = [(0, size - len(array))] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, widths, mode="edge")
