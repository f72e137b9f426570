"""Multi-input models in the engine: ``x`` a list, tuple or dict matching ``model.inputs``.

:class:`Layout` checks the user's structure against the model's inputs and
flattens it into :class:`Columns` (one numpy array per model input, in
``model.inputs`` order), which the one batching loop (:class:`.data.Source`)
slices, concatenates and pads like an array. The step receives the columns as
a list (Keras functional models take their inputs as a list in that order);
the maps come back as a list and :meth:`Layout.pack` gives them the user's
structure. Which inputs are explained (``inputs=``), how a CAM method's single
map is resized, and where ``maps_file`` puts each input's maps are decided here.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

from .._layers import model_inputs
from .data import Columns, to_numpy


def _input_structure(model):
    """``model.input`` (a dict for a model built on a dict of inputs), or None."""
    for candidate in (getattr(model, "explained_model", None), model):
        try:
            return candidate.input
        except (AttributeError, ValueError):
            continue
    return None


def _shape(dims) -> str:
    return "(samples, " + ", ".join("?" if d is None else str(d) for d in dims[1:]) + ")"


class Layout:
    """How the user's ``x`` maps onto ``model.inputs`` (and back, for the maps)."""

    def __init__(self, model, x):
        self.inputs = model_inputs(model)
        self.names = [getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(self.inputs)]
        self.shapes = [tuple(t.shape) for t in self.inputs]
        # the structure the maps come back in: x's, or a dataset's first element's
        self.kind = _kind(x)
        # a float model input takes floats (uint8 images are cast); an integer one takes
        # token ids / categorical codes, fed as they are and never differentiated
        self.floats = ["float" in str(getattr(t, "dtype", "float32")) for t in self.inputs]
        # a model built on a dict of inputs (KerasHub's) is fed a dict, others a list
        self.keyed = isinstance(_input_structure(model), dict)
        if not self.inputs:
            raise ValueError(
                f"`x` is a {type(x).__name__} of inputs, but '{model.name}' does not say what "
                "inputs it takes (model.inputs is empty): build it as a functional "
                "keras.Model(inputs, outputs) or pass one array."
            )

    def expected(self) -> str:
        return ", ".join(f"{n!r}: {_shape(s)}" for n, s in zip(self.names, self.shapes))

    def flatten(self, x, what: str = "`x`") -> Columns:
        """The columns of ``x`` in ``model.inputs`` order, checked against the inputs."""
        if self.kind is None:
            self.kind = _kind(x)
        if isinstance(x, dict):
            missing = [n for n in self.names if n not in x]
            extra = [k for k in x if k not in self.names]
            if missing or extra:
                hints = [
                    f"{k!r} (did you mean {close[0]!r}?)"
                    if (close := difflib.get_close_matches(str(k), self.names, 1))
                    else repr(k)
                    for k in extra
                ]
                raise ValueError(
                    f"{what} is a dict whose keys do not match the model's inputs: "
                    + (f"missing {missing}; " if missing else "")
                    + (f"extra {', '.join(hints)}; " if extra else "")
                    + f"the model takes {{{self.expected()}}}. Key the arrays by input name."
                )
            arrays = [x[n] for n in self.names]
        elif isinstance(x, (list, tuple)):
            if len(x) != len(self.names):
                which = (
                    f"missing {self.names[len(x) :]}"
                    if len(x) < len(self.names)
                    else f"{len(x) - len(self.names)} extra"
                )
                raise ValueError(
                    f"{what} holds {len(x)} arrays but the model takes {len(self.names)} inputs "
                    f"({which}): pass one per input, in order: [{self.expected()}]."
                )
            arrays = list(x)
        else:
            raise TypeError(
                f"{what} must be a list, tuple or dict of arrays for this multi-input model; "
                f"got a {type(x).__name__}. Pass one array per input: [{self.expected()}]."
            )
        arrays = [to_numpy(a) for a in arrays]
        for name, array, shape in zip(self.names, arrays, self.shapes):
            self._check(name, array, shape, what)
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            rows = ", ".join(f"{n!r}: {len(a)}" for n, a in zip(self.names, arrays))
            raise ValueError(
                f"The inputs of {what} hold different numbers of samples ({rows}); give every "
                "input one row per sample."
            )
        return Columns(arrays, self.names if self.keyed else None)

    @staticmethod
    def _check(name, array, shape, what):
        dtype = array.dtype
        if not np.issubdtype(dtype, np.number) and dtype != np.bool_:
            raise TypeError(
                f"The input {name!r} of {what} holds values of dtype {dtype}; pass numbers."
            )
        if array.ndim != len(shape) or any(
            e is not None and e != s for e, s in zip(shape[1:], array.shape[1:])
        ):
            hint = " (add the batch axis: [None])" if array.ndim == len(shape) - 1 else ""
            raise ValueError(
                f"The input {name!r} of {what} has shape {array.shape}, but the model takes "
                f"{_shape(shape)}{hint}."
            )

    def pack(self, values):
        """``values`` (one per input, in ``model.inputs`` order) in the user's structure."""
        values = list(values)
        if self.kind is dict:
            return dict(zip(self.names, values))
        return tuple(values) if self.kind is tuple else values

    def cast(self, columns: Columns, float_dtype) -> Columns:
        """The inputs as the model takes them: floats for float inputs, integers kept."""
        return Columns(
            (
                a.astype(float_dtype(a), copy=False) if is_float else a
                for a, is_float in zip(columns.arrays, self.floats)
            ),
            columns.names,
        )

    def explained(self, inputs) -> tuple[int, ...] | None:
        """The positions ``inputs=`` names (names, positions, or one of them); None: default.

        The default is every float input; a model without one (a text model)
        explains its token ids at their embedding: the input named
        ``token_ids`` (KerasHub), else every integer input but ``padding_mask``.
        """
        if inputs is None:
            if any(self.floats):
                return None
            if "token_ids" in self.names:
                return (self.names.index("token_ids"),)
            return tuple(i for i, n in enumerate(self.names) if n != "padding_mask")
        chosen = [inputs] if isinstance(inputs, (str, int, np.integer)) else list(inputs)
        positions = []
        for item in chosen:
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                if not 0 <= item < len(self.names):
                    raise ValueError(
                        f"`inputs` names the input at position {item}, but the model takes "
                        f"{len(self.names)} inputs: {self.names}."
                    )
                positions.append(int(item))
            elif item in self.names:
                positions.append(self.names.index(item))
            else:
                close = difflib.get_close_matches(str(item), self.names, 1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"`inputs` names {item!r}, which is not an input of the model; its inputs "
                    f"are {self.names}.{hint}"
                )
        # integer inputs (token ids) are explained at their embedding (methods/_tokens.py)
        return tuple(dict.fromkeys(positions))

    def resize_target(self, map_rank: int, explained, branch=None) -> int | None:
        """The input a CAM method's single map is resized to, or None (left as it is).

        The one input named by ``inputs=``; else ``branch``, the input of the
        map's rank that the explained layer reads (see :mod:`.._branches`); else
        the only input of the map's rank (an image for a 2-D map); else none: the
        map keeps the layer's size.
        """
        if explained is not None and len(explained) == 1:
            return explained[0]
        if branch is not None:
            return branch
        same = [i for i, s in enumerate(self.shapes) if len(s) == map_rank]
        return same[0] if len(same) == 1 else None

    def file_paths(self, path: Path, positions) -> dict:
        """Where each explained input's maps go: ``<stem>.<input name>.npy`` next to ``path``."""
        return {
            p: path.with_name(f"{path.stem}.{_safe(self.names[p])}{path.suffix}") for p in positions
        }


def _kind(x):
    for kind in (dict, tuple, list):
        if isinstance(x, kind):
            return kind
    return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def takes_explained(method, parameter: str = "explained_inputs") -> bool:
    """Whether ``method`` (or the method a meta method wraps) takes ``parameter``."""
    import inspect  # noqa: PLC0415

    while method is not None:
        try:
            parameters = inspect.signature(method).parameters
        except (TypeError, ValueError):
            return False
        if parameter in parameters:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return False
        method = getattr(method, "__wrapped_method__", None)
    return False


__all__ = ["Columns", "Layout", "model_inputs", "takes_explained"]
