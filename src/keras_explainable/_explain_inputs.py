"""``ke.explain_prediction(model, [image, features])``: one prediction of a multi-input model.

The value of each input is prepared for its kind: an image input ``(batch, H,
W, C)`` takes what a one-image call takes (a PIL image, a file path, an array,
resized and preprocessed the same way), any other input an array with or
without its batch axis (a feature vector ``(F,)``). The explained classes are
found as for one image, the chosen method runs once through ``ke.explain``
with the whole structure, and its maps (one per explained input for gradient
and perturbation methods, one map for a CAM method: the input its layer's
branch reads) come back as an :class:`~._explanation_inputs.InputsExplanation`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from PIL import Image

from . import engine, inspection
from ._branches import branch_input_of_rank
from ._explanation_inputs import InputExplanation, InputsExplanation
from .engine.multi import Layout, model_inputs
from .utils.images import prepare_image
from .utils.visualization import as_display_image


def is_multi_input(model, x) -> bool:
    """Whether ``x`` is one value per input of a model that takes several."""
    if not isinstance(x, (list, tuple, dict)):
        return False
    try:
        return len(model_inputs(model)) > 1
    except (AttributeError, ValueError, TypeError):
        return False


def _per_input(option, names, what):
    """``option`` for each input name: one value for all, or a dict ``{name: value}``."""
    if not isinstance(option, Mapping):
        return dict.fromkeys(names, option)
    unknown = [k for k in option if k not in names]
    if unknown:
        raise ValueError(f"`{what}` names {unknown}, which are not inputs of the model: {names}.")
    return {name: option.get(name) for name in names}


def _is_picture(value) -> bool:
    return isinstance(value, (Image.Image, str, os.PathLike))


def _prepare(name, value, shape, is_float, preprocessing):
    """``(batch of one, picture or None)`` for the input ``name`` of ``shape``."""
    if is_float and len(shape) == 4:
        array = None if _is_picture(value) else np.asarray(value)
        if array is None or array.ndim in (2, 3) or (array.ndim == 4 and len(array) == 1):
            try:
                return prepare_image(value, shape, preprocessing or "none")
            except (ValueError, TypeError) as error:
                raise type(error)(f"The input {name!r}: {error}") from None
    if _is_picture(value):
        raise TypeError(
            f"The input {name!r} takes arrays of shape {tuple(shape)}, not a picture: pass "
            "its values (a list or array)."
        )
    array = np.asarray(value)
    if array.ndim == len(shape) - 1:
        array = array[None]
    if is_float and np.issubdtype(array.dtype, np.number):
        array = array.astype(np.float32)
    return array, None


def _structure(x, names):
    """``{name: value}`` of the user's ``x`` (a dict by name, a list/tuple by position)."""
    if isinstance(x, dict):
        return dict(x)
    return {names[i] if i < len(names) else f"#{i}": v for i, v in enumerate(x)}


def _feature_names(option, name, count):
    names = option.get(name) if isinstance(option, Mapping) else option
    if names is None:
        return tuple(f"feature {i}" for i in range(count))
    names = tuple(str(n) for n in names)
    if len(names) != count:
        raise ValueError(
            f"`feature_names` gives {len(names)} names for the input {name!r}, which has "
            f"{count} features."
        )
    return names


def _kind(shape, is_float) -> str:
    if not is_float:
        return "integer"
    return {4: "image", 2: "features"}.get(len(shape), "signal")


def explain_inputs(
    model, x, targets, layer, method, top_k, class_names, preprocessing, target, helpers,
    feature_names=None, token_grid=None, prefix_tokens=None, **params,
):  # fmt: skip
    """Explain one prediction of a multi-input model (see ``ke.explain_prediction``).

    ``helpers``: ``keras_explainable.explanation``'s globals (its target and class
    helpers; imported from there they would make an import cycle).
    ``feature_names``: a feature vector's names, a list (every such input) or a
    dict ``{input name: names}``.
    """
    layout = Layout(model, x)
    names = layout.names
    floats = dict(zip(names, layout.floats))
    shapes = dict(zip(names, layout.shapes))
    given = _structure(x, names)
    steps = _per_input(preprocessing, names, "preprocessing")
    prepared, pictures = {}, {}
    for name, value in given.items():
        if name in shapes:
            prepared[name], pictures[name] = _prepare(
                name, value, shapes[name], floats[name], steps[name]
            )
        else:
            prepared[name] = value  # Layout names it (an extra key or position)
    feed = prepared if isinstance(x, dict) else [prepared[k] for k in given]
    layout.flatten(feed)  # a missing or extra input, a wrong shape: a clear error

    info = helpers["get_method"](method)
    if (layer, token_grid, prefix_tokens) != (None, None, None) and not info.uses_layer:
        raise ValueError(
            f"The method {info.name!r} explains the inputs and takes no `layer` (nor "
            "`token_grid` / `prefix_tokens`); drop it, or pick a CAM method."
        )
    bound = helpers["_bound_target"](target, model, targets)
    if bound is not None and bound.needs_units:
        outputs = np.zeros(helpers["_units_of"](bound, model, feed))
    else:
        outputs = helpers["_model_outputs"](model, feed, bound)
    helpers["_check_class_names"](class_names, outputs.shape[-1])
    chosen = helpers["_resolve_targets"](targets, outputs, top_k, class_names)

    explained_model, layer_name, taps = model, None, ()
    convention = bound is None or not bound.reads_model_outputs
    if info.uses_layer:
        explained_model = helpers["_expose"](
            model, layer, None, convention, token_grid, prefix_tokens
        )
        taps = inspection.activation_taps(explained_model, convention=convention)
        layer_name = ", ".join(helpers["describe_layer"](model, tap) for tap in taps)
    settings = info.defaults
    settings.update(params)
    if target is not None:
        settings["target"] = target
    units = np.array([chosen], np.int32)
    scores, maps = engine.explain(
        info.load(), explained_model, feed, units, batch_size=1, verbose=0, **settings
    )
    if info.uses_layer:  # one map: for the input the engine resized it to
        maps = _cam_per_input(model, layout, taps, np.asarray(maps), params.get("inputs"))
    else:
        maps = dict(zip(names, _leaves(maps, names)))

    if bound is None:
        values = outputs[chosen]
        probabilities = helpers["_probabilities"](outputs)[chosen]
    else:
        values = scores[0]
        probabilities = (
            helpers["_probabilities"](outputs)[chosen]
            if bound.scores_classes
            else np.full(len(chosen), np.nan)
        )
    target_names = tuple(helpers["_class_name"](class_names, unit) for unit in chosen)
    labels = tuple(n if n is not None else f"class {u}" for u, n in zip(chosen, target_names))
    parts = {}
    for name in names:
        values_in = np.asarray(prepared[name])[0]
        heat = maps.get(name)
        kind = _kind(shapes[name], floats[name])
        note = ""
        if heat is None:
            note = (
                "integer ids are fed as they are, never differentiated"
                if kind == "integer"
                else "not among the inputs explained"
                if not info.uses_layer
                else f"the CAM's layer ({layer_name}) is on another input's branch"
            )
        picture = pictures.get(name)
        if kind == "image" and picture is None:
            picture = Image.fromarray(as_display_image(values_in)).convert("RGB")
        parts[name] = InputExplanation(
            name=name, kind=kind, values=values_in,
            heatmaps=None if heat is None else np.moveaxis(np.asarray(heat[0], np.float32), -1, 0),
            image=picture,
            feature_names=_feature_names(feature_names, name, values_in.shape[0])
            if kind == "features" else None,
            labels=labels, note=note,
        )  # fmt: skip
    return InputsExplanation(
        inputs=parts,
        target_ids=tuple(chosen),
        target_names=target_names,
        scores=np.asarray(values, np.float32),
        probabilities=np.asarray(probabilities, np.float64),
        method=info.name,
        layer=layer_name,
        model_name=getattr(model, "explained_model", model).name,
    )


def _leaves(maps, names) -> list:
    if isinstance(maps, dict):
        return [maps.get(n) for n in names]
    return list(maps)


def _cam_per_input(model, layout, taps, cam, inputs) -> dict:
    """``{name: map}``: a CAM's one map belongs to the input it was resized to."""
    explained = layout.explained(inputs)
    branch = None
    if taps:
        branch = branch_input_of_rank(model, taps[0], layout.shapes, cam.ndim)
    position = layout.resize_target(cam.ndim, explained, branch)
    if position is None or tuple(cam.shape[1:-1]) != tuple(layout.shapes[position][1:-1]):
        raise ValueError(
            f"The CAM's map {tuple(cam.shape[1:])} belongs to no single input of the model "
            f"({layout.expected()}): its layer's branch reads several inputs of its rank, or "
            "none. Name the input it explains with inputs='name'."
        )
    return {layout.names[position]: cam}


__all__ = ["explain_inputs", "is_multi_input"]
