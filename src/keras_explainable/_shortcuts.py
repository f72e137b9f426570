"""The ``ke.*`` shortcuts, generated from the method registry.

A shortcut is ``ke.explain`` bound to one method and that method's defaults
(:mod:`keras_explainable.methods.registry`). Making one imports nothing heavy:
Keras and the method are imported on the first call.
"""

from __future__ import annotations

import functools

from .methods.registry import METHODS, MethodSpec

_DOC = """{title}: ``ke.explain`` with ``ke.{call}`` and its defaults.

{summary_cap}. Reference: {reference}.

Defaults: ``postprocessing={post}``, ``resizing={resizing}``.

Args:
    model: a Keras 3 model{model_note}.
    x: the inputs ``(N, *spatial, channels)``: an array, a backend tensor, a
        ``tf.data.Dataset``, a ``keras.utils.PyDataset`` or any batch iterable
        (see ``ke.explain``).
    y: the units to explain, ``(N, units)`` or ``(N,)``; ``None`` for every unit.
    target: what is explained: {target_note}
    **params: ``ke.explain``'s options (``batch_size``, ``verbose``,
        ``postprocessing``, ``resizing``, ...) and the method's own parameters
        (see ``ke.{call}``), all overriding the defaults above.

Returns:
    ``(scores, maps)`` as numpy arrays: ``(N, units)`` and
    ``(N, *spatial, units)``.
"""


def shortcut(spec: MethodSpec):
    """``ke.explain`` bound to ``spec``'s method and defaults (built without importing Keras)."""

    def explain_with(model, x, y=None, target=None, **params):
        from .engine import explain

        return explain(spec.load(), model, x, y, target=target, **{**spec.defaults, **params})

    explain_with.__name__ = explain_with.__qualname__ = spec.name
    explain_with.__module__ = "keras_explainable"
    explain_with.__doc__ = _DOC.format(
        title=spec.title,
        call=spec.call,
        summary_cap=spec.summary[:1].upper() + spec.summary[1:],
        reference=spec.reference,
        post=f"ke.filters.{spec.postprocessing}" if spec.postprocessing else "None",
        resizing=spec.resizing,
        target_note=(
            "``None`` (the classes of the first output, gathered at ``y``), a\n"
            "        ``ke.targets`` target (``output(name)``, ``regression()``,\n"
            "        ``segmentation(mask)``, ...) or a function ``(outputs, units) ->\n"
            "        (batch, units)`` scores, compiled into the step."
            if spec.any_target
            else "only the default, ``None`` or ``ke.targets.classes()`` (the method's\n"
            "        weights are the classifier's; use ``ke.gradcam`` for other targets)."
        ),
        model_note=(
            " (an exposed model, ``ke.inspection.expose``, picks the explained layer; "
            "otherwise the input of the last global pooling layer is explained)"
            if spec.uses_layer
            else ""
        ),
    )
    return explain_with


#: Every shortcut, by name (``ke.gradcam``, ...).
SHORTCUTS = {name: shortcut(spec) for name, spec in METHODS.items()}


def partial_explain(method, **default_params):
    """``explain`` bound to a method and default parameters.

    Args:
        method: an explaining method.
        **default_params: defaults for ``explain`` (e.g. ``postprocessing``);
            the caller can still override each one.

    Returns:
        a function ``(model, x, y=None, **params) -> (scores, maps)``.

    Example:
        >>> absolute_gradients = ke.partial_explain(
        ...     ke.methods.gradient.gradients, postprocessing=ke.filters.absolute_normalize)
        >>> scores, maps = absolute_gradients(model, x, y)
    """

    @functools.wraps(method)
    def explain_with(model, x, y=None, **params):
        from .engine import explain

        return explain(method, model, x, y, **{**default_params, **params})

    explain_with.__doc__ = (
        f"``ke.explain`` with ``{method.__module__}.{method.__name__}`` and the defaults "
        f"{ {k: getattr(v, '__name__', v) for k, v in default_params.items()} }.\n\n"
        "Signature: ``(model, x, y=None, batch_size=None, verbose='auto', **params) -> "
        "(scores, maps)`` as numpy arrays; see ``ke.explain``.\n\n"
        f"Method documentation:\n{method.__doc__}"
    )
    return explain_with
