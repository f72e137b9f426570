"""Explain one prediction in one call, eli5-style, and look at it.

:func:`explain_prediction` takes a model and a picture (a PIL image, an array
or a file path), resizes it to the model's input, finds the top prediction(s)
and a spatial layer when they are not given, runs the chosen method and returns
an :class:`Explanation`: the picture, one heatmap per explained class with its
score, the method and the layer. ``Explanation.overlay()`` draws a heatmap on
the picture, and the object shows itself as a PNG in Jupyter.

Every method of the package is reachable by its API name or an old spelling
(:data:`METHODS`, from :mod:`keras_explainable.methods.registry`;
``keras-explainable methods`` on the command line), with the defaults of the
``ke.*`` shortcuts (CAM methods: ReLU + min-max normalization, resized to the
input; gradients and perturbations: min-max normalization).

The result classes live in ``_explanation_result`` and the layer choice and
naming in ``_layer_naming``; every name stays importable from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from . import engine, inspection
from . import targets as _targets  # `targets` is explain_prediction's class indices
from ._explain_inputs import explain_inputs, is_multi_input
from ._explanation_inputs import InputExplanation, InputsExplanation
from ._explanation_result import Explanation, TargetExplanation
from ._layer_naming import (  # noqa: F401  (_expose: used by the command line)
    _EXPOSED,
    _expose,
    _layer_key,
    _resolve_layer_name,
    describe_layer,
)
from .methods.registry import ALIASES as _ALIASES  # noqa: F401
from .methods.registry import METHODS, MethodSpec
from .methods.registry import get as get_method
from .utils.images import prepare_image

__all__ = [
    "METHODS",
    "Explanation",
    "InputExplanation",
    "InputsExplanation",
    "MethodInfo",
    "MethodSpec",
    "TargetExplanation",
    "describe_layer",
    "explain_prediction",
    "get_method",
]

#: The former name of :class:`~keras_explainable.methods.registry.MethodSpec`.
MethodInfo = MethodSpec

# --------------------------------------------------------------------------- helpers


def _class_name(class_names, index: int) -> str | None:
    if class_names is None:
        return None
    if isinstance(class_names, Mapping):
        name = class_names.get(index, class_names.get(str(index)))
        return None if name is None else str(name)
    return str(class_names[index]) if 0 <= index < len(class_names) else None


def _check_class_names(class_names, classes: int):
    if class_names is None or isinstance(class_names, Mapping):
        return
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(
            "`class_names` is a list of names (one per output unit) or a dict {index: name}; "
            f"got a {type(class_names).__name__}."
        )
    if len(class_names) != classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names but the model has {classes} outputs."
        )


def _resolve_targets(targets, outputs: np.ndarray, top_k, class_names) -> list[int]:
    classes = outputs.shape[-1]
    if targets is None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"`top_k` is a positive int; got {top_k!r}.")
        if top_k > classes:
            raise ValueError(f"top_k={top_k} exceeds the model's {classes} outputs.")
        return [int(i) for i in np.argsort(-outputs, kind="stable")[:top_k]]
    if isinstance(targets, (int, np.integer, str)):
        targets = [targets]
    resolved = []
    for target in targets:
        if isinstance(target, str):
            names = {}
            if isinstance(class_names, Mapping):
                names = {str(v): int(k) for k, v in class_names.items()}
            elif class_names is not None:
                names = {str(v): i for i, v in enumerate(class_names)}
            if target not in names:
                close = difflib.get_close_matches(target, list(names), n=3)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                where = "in `class_names`" if names else "(pass `class_names` to use names)"
                raise ValueError(f"Unknown class name {target!r} {where}.{hint}")
            target = names[target]
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
            raise TypeError(f"`targets` holds class indices or names; got {target!r}.")
        if not 0 <= target < classes:
            raise ValueError(
                f"Target {target} is out of range: the model has {classes} outputs "
                f"(indices 0 to {classes - 1})."
            )
        resolved.append(int(target))
    if not resolved:
        raise ValueError("`targets` is empty; pass None to explain the top prediction.")
    return resolved


def _probabilities(outputs: np.ndarray) -> np.ndarray:
    """The outputs if they already are a distribution, else their softmax."""
    outputs = outputs.astype(np.float64)
    if outputs.min() >= 0.0 and abs(outputs.sum() - 1.0) < 1e-3:
        return outputs
    shifted = np.exp(outputs - outputs.max())
    return shifted / shifted.sum()


def _model_outputs(model, inputs, target=None) -> np.ndarray:
    """The scores of every unit: the first output, or ``target(outputs, None)``."""
    if target is None:
        outputs = engine.forward(model, inputs)
        logits = keras.ops.convert_to_numpy(inspection.first_output(outputs))
    else:
        outputs = engine.forward(_targets.model_to_run(model, target), inputs)
        logits = keras.ops.convert_to_numpy(_targets.selector(target, None)(outputs, ()))
    if logits.ndim != 2:
        raise ValueError(
            f"'{model.name}' outputs shape {tuple(logits.shape)}; explain_prediction explains "
            "classifiers, whose (first) output is (batch, classes), or another output with "
            "target= (ke.targets.output(name), ke.targets.segmentation(), ...)."
        )
    return logits[0]


def _bound_target(target, model, chosen):
    bound = _targets.bound(target, model)
    if bound is not None and bound.needs_units and chosen is None:
        raise ValueError(
            f"The target {bound!r} explains given units: pass `targets=` (e.g. the class "
            "index whose region is explained)."
        )
    return bound


def _units_of(target, model, inputs) -> int:
    """How many units ``target`` scores (for checking ``targets``): from the outputs."""
    outputs = engine.forward(_targets.model_to_run(model, target), inputs)
    count = target.units_of(outputs)
    if count is None:
        raise ValueError(
            f"The target {target!r} needs `targets=` but cannot tell how many units it has."
        )
    return count


# --------------------------------------------------------------------------- the call


def explain_prediction(
    model,
    image,
    targets=None,
    layer=None,
    method: str = "gradcam",
    top_k: int = 1,
    class_names=None,
    preprocessing="none",
    target=None,
    token_grid=None,
    prefix_tokens=None,
    **params: Any,
) -> Explanation:
    """Explain a classifier's prediction on one picture (or one text).

    A text: ``explain_prediction(model, "a sentence", preprocessor=...)`` with a
    KerasHub preprocessor or tokenizer, or a function text -> token ids (and
    ``id_to_token=``, id -> str). The token ids are explained at their
    embedding (``method``: ``"integrated_gradients"`` by default, or
    ``gradients``, ``gradients_x_inputs``, ``smoothgrad``, ``occlusion``); the
    :class:`Explanation` has ``tokens`` and one signed weight per token, and
    ``to_html()`` highlights them (docs/text.md).

    Args:
        model: a Keras 3 image classifier (any architecture: functional,
            Sequential, nested, subclassed), or an exposed model
            (``ke.inspection.expose``). Its first output is explained; it is
            never modified.
        image: a PIL image, a file path, or an array / backend tensor ``(H, W)``,
            ``(H, W, C)`` or ``(1, H, W, C)``. It is resized (Pillow, bilinear)
            to the model's input size and its channels matched (gray <-> RGB).
            PIL images and ``uint8`` arrays are pixels in ``[0, 255]``. A
            multi-input model takes a list, tuple or dict of one value per input
            (each image input as above, other inputs as arrays with or without
            the batch axis; ``feature_names=`` names a feature vector's entries)
            and gives an :class:`InputsExplanation` (docs/multi_input.md).
        targets: the class indices (or names, with ``class_names``) to explain;
            ``None`` explains the ``top_k`` highest outputs.
        layer: the layer a CAM method explains: a name (``"conv5"``, or a path
            ``"base/conv5"`` / ``("base", "conv5")`` into a nested model), an
            index in ``model.layers`` or a layer. ``None`` picks the input of the
            last global pooling layer (a segmenter's or detector's: the features
            its heads read; see ``ke.inspection.expose``), and the
            :class:`Explanation` says which it used. Methods that explain the
            input (gradients, occlusion, RISE) take no layer.
        method: a name from :data:`METHODS` (``"gradcam"``, ``"gradcampp"``,
            ``"scorecam"``, ``"layercam"``, ``"gradients"``, ``"occlusion"``,
            ``"rise"``, ...).
        top_k: how many top predictions to explain when ``targets`` is None.
        class_names: a list of names (one per output) or a dict ``{index: name}``.
        preprocessing: applied after resizing: ``"none"`` (default: the pixel
            values as given), ``"scale01"``, ``"minus1to1"``, ``"imagenet-caffe"``,
            ``"imagenet-torch"``, or a function ``f(pixels) -> inputs``.
        target: what is explained (:mod:`ke.targets`): ``None`` (the classes
            of the first output), ``ke.targets.output(name)`` for one output of
            a multi-output model, ``ke.targets.regression()``,
            ``ke.targets.segmentation()`` (give ``targets=``: the classes whose
            region is explained) or a function. ``targets`` then indexes the
            units the target scores, and ``top_k`` picks its highest ones.
        token_grid: for a vision transformer's token layer, the patch grid
            ``(gh, gw)`` its tokens lie on; ``None`` guesses it (see
            :func:`ke.inspection.expose`). CAM methods only.
        prefix_tokens: the number of class/distillation/register tokens in
            front of the patch tokens; ``None`` guesses it. CAM methods only.
        **params: passed to ``ke.explain``: the method's own parameters and
            ``postprocessing`` / ``resizing`` to override the defaults.

    Returns:
        an :class:`Explanation` (:class:`InputsExplanation` for several inputs).

    Raises:
        ValueError: for an unknown method or layer (the message lists the known
            methods / the closest layer names), a layer given to a method that
            takes none, targets out of range, or a model that is not a classifier.

    Example:
        >>> explanation = ke.explain_prediction(model, "cat.jpg", top_k=2,
        ...                                     class_names=names, preprocessing="minus1to1")
        >>> explanation.layer, explanation.target_names
        ('post_relu', ['tabby', 'tiger cat'])
        >>> explanation.overlay().save("cat_gradcam.png")

    References:
        Selvaraju et al. (2017). Grad-CAM: Visual Explanations from Deep Networks
        via Gradient-based Localization. ICCV. arXiv:1610.02391 (the default
        method); the other methods' references are in :data:`METHODS`.
    """
    if params.get("preprocessor") is not None:  # a text: see text/_explain.py
        from .text._explain import explain_text  # noqa: PLC0415

        text_method = "integrated_gradients" if method == "gradcam" else method
        return explain_text(
            model, image, params.pop("preprocessor"), targets, text_method, top_k, class_names,
            target, helpers=globals(), **params,
        )  # fmt: skip
    if is_multi_input(model, image):  # one value per input: _explain_inputs.py
        return explain_inputs(
            model, image, targets, layer, method, top_k, class_names, preprocessing, target,
            globals(), token_grid=token_grid, prefix_tokens=prefix_tokens, **params,
        )  # fmt: skip
    info = get_method(method)
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"`model` must be a Keras 3 model; got a {type(model).__name__}. Load it with "
            "keras.saving.load_model(...)."
        )
    given = "`layer`" if layer is not None else None
    if (token_grid, prefix_tokens) != (None, None):
        given = "`token_grid` / `prefix_tokens`"
    if given is not None and not info.uses_layer:
        raise ValueError(
            f"The method {info.name!r} explains the input pixels and takes no {given}; drop "
            "it, or pick a CAM method ("
            + ", ".join(n for n, i in METHODS.items() if i.uses_layer)
            + ")."
        )
    input_shape = inspection.input_shape_of(model)
    inputs, picture = prepare_image(image, input_shape, preprocessing)
    bound = _bound_target(target, model, targets)
    if bound is not None and bound.needs_units:
        outputs = np.zeros(_units_of(bound, model, inputs))  # the scores come with the maps
    else:
        outputs = _model_outputs(model, inputs, bound)
    _check_class_names(class_names, outputs.shape[-1])
    chosen = _resolve_targets(targets, outputs, top_k, class_names)

    explained_model, layer_name = model, None
    convention = bound is None or not bound.reads_model_outputs
    if info.uses_layer:
        explained_model = _expose(
            model, layer, tuple(inputs.shape), convention, token_grid, prefix_tokens
        )
        taps = inspection.activation_taps(
            explained_model, input_shape=tuple(inputs.shape), convention=convention
        )
        layer_name = ", ".join(describe_layer(model, tap) for tap in taps)

    settings = info.defaults
    if info.explain_params is not None:
        settings.update(info.explain_params(tuple(inputs.shape[1:-1])))
    settings.update(params)
    if target is not None:
        settings["target"] = target
    units = np.array([chosen], np.int32)
    scores, maps = engine.explain(
        info.load(), explained_model, inputs, units, batch_size=1, verbose=0, **settings
    )
    maps = np.asarray(maps[0], np.float32)  # (H, W, units)
    if bound is None:
        values, probabilities = outputs[chosen], _probabilities(outputs)[chosen]
    else:  # the target's scores; a probability only for a class vector
        values = scores[0]
        probabilities = _probabilities(outputs)[chosen] if bound.scores_classes else None
    explained = tuple(
        TargetExplanation(
            target=unit,
            name=_class_name(class_names, unit),
            score=float(values[position]),
            probability=float("nan") if probabilities is None else float(probabilities[position]),
            heatmap=maps[..., position],
        )
        for position, unit in enumerate(chosen)
    )
    name = getattr(model, "explained_model", model).name
    return Explanation(picture, inputs, explained, info.name, layer_name, name)
