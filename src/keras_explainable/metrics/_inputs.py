"""The metrics' inputs: one image batch, or a multi-input model's ``x`` with a map per input.

A metric perturbs the inputs its maps explain. For a model of one input, ``x``
is a batch of images ``(N, H, W, C)`` and ``maps`` one map per image. For a
multi-input model ``x`` is a list, tuple or dict matching ``model.inputs`` (as
``ke.explain`` takes it) and ``maps`` is what ``ke.explain`` returned for it:
one map per input in the same structure (``None``: that input is left as it
is), or a single map (a CAM), which belongs to the one input of its rank.
Each explained input is perturbed by its own map: an image ``(N, H, W, C)``
by pixels (every channel), a feature vector ``(N, F)`` by features.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..engine.data import Columns, to_numpy
from ..engine.multi import Layout
from ._common import as_images, as_maps


class Part(NamedTuple):
    """One explained input: its values, its map (resized to it) and its position."""

    position: int  # in model.inputs order
    values: np.ndarray  # (N, H, W, C) or (N, F)
    maps: np.ndarray  # (N, H, W) or (N, F)

    @property
    def positions(self) -> int:
        return int(np.prod(self.maps.shape[1:]))

    def spread(self, mask: np.ndarray) -> np.ndarray:
        """A ``(rows, *map axes)`` mask over the values (an image's mask on every channel)."""
        return mask[..., None] if self.values.ndim == 4 else mask


class Inputs(NamedTuple):
    """``x`` as the metrics use it: the model's inputs and the explained parts."""

    columns: object  # an (N, H, W, C) array, or Columns for a multi-input model
    parts: list

    def with_parts(self, rows, replaced: dict):
        """The inputs at ``rows`` with the explained parts' values replaced by ``replaced``."""
        if not isinstance(self.columns, Columns):
            return replaced[0]
        arrays = [replaced.get(i, column[rows]) for i, column in enumerate(self.columns.arrays)]
        return Columns(arrays)


def as_inputs(model, x, maps, name: str = "x") -> Inputs:
    """``x`` and ``maps`` checked: one image batch, or a multi-input model's structure."""
    if not isinstance(x, (list, tuple, dict)):
        x = as_images(x, name)
        n, height, width, _ = x.shape
        return Inputs(x, [Part(0, x, as_maps(maps, n, size=(height, width)))])
    layout = Layout(model, x)
    columns = layout.cast(layout.flatten(x, f"`{name}`"), lambda a: np.float32)
    given = _maps_per_input(layout, maps, columns)
    parts = []
    for position, (values, map_) in enumerate(zip(columns.arrays, given)):
        if map_ is None:
            continue
        if values.ndim == 4:
            parts.append(Part(position, values, as_maps(map_, len(values), values.shape[1:3])))
        elif values.ndim == 2:
            parts.append(
                Part(position, values, _feature_maps(map_, values.shape, layout, position))
            )
        else:
            raise ValueError(
                f"The metrics perturb images (N, H, W, C) and feature vectors (N, F); the input "
                f"{layout.names[position]!r} has shape {values.shape}. Pass None as its map."
            )
    if not parts:
        raise ValueError("`maps` explains none of the inputs (every entry is None).")
    return Inputs(columns, parts)


def _maps_per_input(layout, maps, columns) -> list:
    """One map (or None) per model input, from a structure like ``x`` or a single map."""
    if isinstance(maps, dict):
        unknown = [k for k in maps if k not in layout.names]
        if unknown:
            raise ValueError(
                f"`maps` names {unknown}, which are not inputs of the model ({layout.names})."
            )
        return [maps.get(name) for name in layout.names]
    if isinstance(maps, (list, tuple)):
        if len(maps) != len(layout.names):
            raise ValueError(
                f"`maps` holds {len(maps)} entries for {len(layout.names)} inputs "
                f"({layout.names}): give one per input (None for an input left as it is)."
            )
        return list(maps)
    single = to_numpy(maps)  # a CAM: the one input of its rank
    rank = single.ndim if single.ndim == 3 or single.shape[-1] != 1 else single.ndim - 1
    same = [i for i, a in enumerate(columns.arrays) if a.ndim == rank + 1]
    if len(same) != 1:
        raise ValueError(
            f"`maps` is one array {single.shape} for a model of {len(layout.names)} inputs "
            f"({layout.expected()}); give one map per input, in the structure of `x` (None "
            "for an input left as it is)."
        )
    return [single if i == same[0] else None for i in range(len(layout.names))]


def _feature_maps(maps, shape, layout, position) -> np.ndarray:
    maps = to_numpy(maps).astype(np.float64)
    if maps.ndim == 3 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    if maps.shape != tuple(shape):
        raise ValueError(
            f"The map of the input {layout.names[position]!r} has shape {maps.shape}; it must "
            f"be {tuple(shape)} (or with a last axis of 1), one value per feature."
        )
    if not np.isfinite(maps).all():
        raise ValueError("`maps` holds NaN or Inf values; clean them first.")
    return maps
