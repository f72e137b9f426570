"""``ke.explain_prediction(model, "a sentence", preprocessor=...)``: one text, explained.

The text is encoded (:class:`._preprocess.TextEncoder`), the model's top
prediction(s) found, and the chosen token method run through ``ke.explain``
(token ids are explained at their embedding, see
:mod:`keras_explainable.methods._tokens`). The :class:`Explanation` holds the
token strings and one signed weight per token and explained class, renders as
highlighted HTML (``to_html()``, inline in Jupyter) and goes into the HTML
report like a picture's.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from .. import engine
from .._explanation_result import Explanation, TargetExplanation
from ..methods.registry import get as get_method
from ._preprocess import TextEncoder, fit_length

#: The methods that explain token ids (registry names).
TEXT_METHODS = (
    "gradients",
    "gradients_x_inputs",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
)


def _length(model) -> int | None:
    """The fixed number of tokens of a one-input model, or None."""
    inputs = engine.multi.model_inputs(model)
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        return None
    return inputs[0].shape[1]


def explain_text(
    model,
    text: str,
    preprocessor,
    targets=None,
    method: str = "integrated_gradients",
    top_k: int = 1,
    class_names=None,
    target=None,
    id_to_token=None,
    helpers=None,
    **params: Any,
) -> Explanation:
    """Explain a text classifier's prediction on one text (see ``ke.explain_prediction``).

    The defaults keep the weights signed (``postprocessing=None``); Integrated
    Gradients starts from the pad token's embedding (``baseline="pad"``,
    ``pad_id`` default 0) with 32 steps, occlusion hides one token at a time.
    ``helpers``: ``keras_explainable.explanation``'s globals (its target and
    class-name helpers; passed in, so that this module does not import it back).
    """
    _explanation = types.SimpleNamespace(**helpers)

    info = get_method(method)
    if info.name not in TEXT_METHODS:
        raise ValueError(
            f"The method {info.name!r} does not explain token ids; for text use one of "
            f"{', '.join(TEXT_METHODS)}."
        )
    encoder = TextEncoder(preprocessor, id_to_token, params.get("pad_id"))
    encoded = fit_length(encoder(text), _length(model), params.get("pad_id"))
    bound = _explanation._bound_target(target, model, targets)
    outputs = _explanation._model_outputs(model, encoded.inputs, bound)
    _explanation._check_class_names(class_names, outputs.shape[-1])
    chosen = _explanation._resolve_targets(targets, outputs, top_k, class_names)
    settings = {"postprocessing": None, "resizing": False}
    if info.name == "integrated_gradients":
        settings.update(baseline="pad", n_steps=32)
    if info.name == "occlusion":
        settings.update(window=1)
    settings.update(params)
    if target is not None:
        settings["target"] = target
    scores, maps = engine.explain(
        info.load(), model, encoded.inputs, np.array([chosen], np.int32), batch_size=1,
        verbose=0, **settings,
    )  # fmt: skip
    if isinstance(maps, dict):
        maps = maps["token_ids"]
    elif isinstance(maps, (list, tuple)):
        maps = next(m for m in maps if m is not None)
    maps = np.asarray(maps[0], np.float32)  # (tokens, units)
    maps = np.where(encoded.real[:, None], maps, 0.0)
    values = outputs[chosen] if bound is None else scores[0]
    probabilities = _explanation._probabilities(outputs)[chosen]
    explained = tuple(
        TargetExplanation(
            target=unit,
            name=_explanation._class_name(class_names, unit),
            score=float(values[position]),
            probability=float(probabilities[position]),
            heatmap=maps[:, position],
        )
        for position, unit in enumerate(chosen)
    )
    return Explanation(
        None, encoded.inputs, explained, info.name, None, model.name,
        tokens=encoded.tokens, token_mask=tuple(bool(r) for r in encoded.real), text=text,
    )  # fmt: skip


__all__ = ["TEXT_METHODS", "explain_text"]
