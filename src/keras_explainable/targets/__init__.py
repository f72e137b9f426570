"""Targets: what a method explains, turned from the model's outputs into scores.

Every method, ``ke.explain``, the ``ke.*`` shortcuts, ``ke.explain_prediction``,
the metrics and the command line take ``target=``. A target is a function::

    target(outputs, units) -> scores  # (batch, U) floats

written with ``keras.ops``. It runs inside the compiled step, right after the
forward pass, so choosing an output, a regression direction or a segmentation
region costs no extra pass.

- ``outputs`` is what the user's model returns: a tensor, a list or a dict. On
  an exposed model (``ke.inspection.expose(model, arguments=...)``) it is what
  ``model`` itself returns — the exposure only picks the layer a CAM method
  explains — except for :func:`classes`, which gathers the exposed logits.
- ``units`` is ``y`` as ``(batch, U)`` int32 indices, or ``None`` (``y=None``).

Built-ins: :func:`classes` (the default: the first output's units at ``y``),
:func:`output` (one output of a multi-output model, by name or position),
:func:`regression` (a regression value, ``sign=-1`` for what lowers it),
:func:`segmentation` (Seg-Grad-CAM: a class's logits summed over a region),
:func:`detection` (the class scores of one detection of an object detector) and
:func:`continuation` (the log-probability of each continuation token of a causal
language model).
Any function of the signature above works; a :class:`Target` subclass can also
check names against the model and carry per-sample data.

Writing a target (the extension point; ``detection.py`` is one):

1. Subclass :class:`Target` and implement ``__call__(outputs, units)``.
2. ``bind(model)`` (optional) resolves names against the model
   (:func:`output_names`, and :func:`closest` for "did you mean" errors). Return
   ``self`` or a copy; never change ``self`` (targets are reused across calls
   and are part of the compiled step's cache key, by identity). ``explain``
   binds before anything runs, but a method may bind again while its step is
   traced (the CAM methods do), so ``bind`` must only read names and shapes:
   no forward pass, no tensors created.
3. ``per_sample()`` (optional) returns ``{name: array}`` with one row per sample
   of ``x`` (a mask, a box). The engine slices them with ``x`` into batches,
   pads them like ``x`` and passes them into the compiled step; in ``__call__``
   read this batch's rows with ``self.rows(name)`` (a backend tensor). Methods
   that copy samples (SmoothGrad, integrated gradients, the perturbation
   methods) copy the rows alike (:meth:`Target.tiled` / :meth:`Target.repeated`).
4. ``units_of(outputs)`` (optional) says how many units ``y`` may index, so
   ``explain`` checks ``y`` before compiling; ``needs_units = True`` makes
   ``y=None`` a clear error.
5. Export the factory here (``from .detection import detection``) and add it
   to ``__all__``.

Results are checked: scores that are not ``(batch, U)`` raise a ``ValueError``
naming the expected shape, non-float scores a ``TypeError``.

Example:
    >>> import keras_explainable as ke
    >>> scores, maps = ke.gradcam(model, x, y, target=ke.targets.output("aux"))
    >>> scores, maps = ke.gradients(model, x, target=ke.targets.regression(sign=-1))
    >>> scores, maps = ke.gradcam(model, x, y, target=lambda outputs, units: outputs[1][:, :1])
"""

from __future__ import annotations

from ._base import (  # noqa: F401  (bound, model_to_run, selector: the methods' plumbing)
    Classes,
    FunctionTarget,
    Target,
    as_target,
    batched_units,
    bound,
    check_scores,
    closest,
    model_to_run,
    output_names,
    selector,
)
from ._builtin import Output, Regression, Segmentation, classes, output, regression, segmentation
from .detection import Detection, detection
from .generation import Continuation, continuation

__all__ = [
    "Classes",
    "Continuation",
    "Detection",
    "FunctionTarget",
    "Output",
    "Regression",
    "Segmentation",
    "Target",
    "as_target",
    "classes",
    "closest",
    "continuation",
    "detection",
    "output",
    "output_names",
    "regression",
    "segmentation",
]
