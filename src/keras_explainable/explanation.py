"""Explain one prediction in one call, eli5-style, and look at it.

:func:`explain_prediction` takes a model and a picture (a PIL image, an array
or a file path), resizes it to the model's input, finds the top prediction(s)
and a spatial layer when they are not given, runs the chosen method and returns
an :class:`Explanation`: the picture, one heatmap per explained class with its
score, the method and the layer. ``Explanation.overlay()`` draws a heatmap on
the picture, and the object shows itself as a PNG in Jupyter.

Every method of the package is reachable by a short name (:data:`METHODS`,
``keras-explainable methods`` on the command line), with the defaults of the
``ke.*`` shortcuts (CAM methods: ReLU + min-max normalization, resized to the
input; gradients and perturbations: min-max normalization).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import io
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from PIL import Image

from . import backend, filters, inspection, methods
from .engine import explain
from .utils.images import prepare_image
from .utils.visualization import overlay as overlay_arrays
from .utils.visualization import visualize

__all__ = ["METHODS", "Explanation", "MethodInfo", "TargetExplanation", "explain_prediction"]


# --------------------------------------------------------------------------- methods


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """How :func:`explain_prediction` runs a method, and what to say about it.

    Attributes:
        name: the short name (``"gradcam"``).
        title: a display name (``"Grad-CAM"``).
        family: ``"CAM"``, ``"gradient"`` or ``"perturbation"``.
        build: returns the explaining method (built on first use, then reused).
        postprocessing: the default ``postprocessing`` given to ``ke.explain``.
        resizing: the default ``resizing`` given to ``ke.explain``.
        uses_layer: whether the method explains an intermediate layer.
        summary: one line on what the map shows.
        reference: the paper.
        params: default method parameters; a function of the input's spatial
            size when they depend on it.
    """

    name: str
    title: str
    family: str
    build: Callable[[], Callable]
    postprocessing: Callable | None
    resizing: bool
    uses_layer: bool
    summary: str
    reference: str
    params: Callable[[tuple[int, ...]], dict] | None = None

    @functools.cached_property
    def method(self) -> Callable:
        """The explaining method (one object, so ``ke.explain`` reuses its compiled step)."""
        return self.build()

    def __hash__(self):
        return hash(self.name)


def _cam(name, title, summary, reference):
    return MethodInfo(
        name, title, "CAM", lambda: getattr(methods.cams, name), filters.positive_normalize,
        True, True, summary, reference,
    )  # fmt: skip


def _occlusion_params(spatial):
    window = tuple(max(1, s // 8) for s in spatial)
    return {"window": window, "stride": tuple(max(1, w // 2) for w in window)}


def _smoothgrad():
    return methods.meta.smooth(methods.gradient.gradients, repetitions=20, noise=0.1, seed=0)


_CATALOGUE = (
    _cam("cam", "CAM", "feature maps weighted by the classifier's weights (GAP heads)",
         "Zhou et al., CVPR 2016, arXiv:1512.04150"),
    _cam("gradcam", "Grad-CAM", "feature maps weighted by their mean gradient",
         "Selvaraju et al., ICCV 2017, arXiv:1610.02391"),
    _cam("gradcampp", "Grad-CAM++", "feature maps weighted by weighted positive gradients",
         "Chattopadhay et al., WACV 2018, arXiv:1710.11063"),
    _cam("xgradcam", "XGrad-CAM", "gradients averaged with the activations as weights",
         "Fu et al., BMVC 2020, arXiv:2008.02312"),
    _cam("layercam", "LayerCAM", "every position weighted by its own positive gradient",
         "Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943"),
    _cam("hirescam", "HiResCAM", "gradient times activation, summed over channels",
         "Draelos & Carin, 2020, arXiv:2011.08891"),
    _cam("eigencam", "Eigen-CAM", "first principal component of the feature maps "
         "(the same map for every class)", "Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299"),
    _cam("scorecam", "Score-CAM", "feature maps weighted by the score of the input they mask",
         "Wang et al., CVPR-W 2020, arXiv:1910.01279"),
    _cam("ablationcam", "Ablation-CAM", "feature maps weighted by the score lost without them",
         "Desai & Ramaswamy, WACV 2020, doi:10.1109/WACV45572.2020.9093360"),
    MethodInfo(
        "gradients", "Gradients", "gradient", lambda: methods.gradient.gradients,
        filters.normalize, False, False, "|gradient| of the score w.r.t. each pixel",
        "Simonyan et al., 2013, arXiv:1312.6034",
    ),
    MethodInfo(
        "gradients_x_inputs", "Gradient x Input", "gradient",
        lambda: methods.gradient.gradients_x_inputs, filters.absolute_normalize, False, False,
        "|pixel x gradient|, summed over channels", "Shrikumar et al., 2016, arXiv:1605.01713",
    ),
    MethodInfo(
        "integrated_gradients", "Integrated Gradients", "gradient",
        lambda: methods.gradient.integrated_gradients, filters.absolute_normalize, False, False,
        "|gradients integrated from a black image|", "Sundararajan et al., ICML 2017, "
        "arXiv:1703.01365",
    ),
    MethodInfo(
        "smoothgrad", "SmoothGrad", "gradient", _smoothgrad, filters.normalize, False, False,
        "gradients averaged over 20 noisy copies (10% noise)",
        "Smilkov et al., 2017, arXiv:1706.03825",
    ),
    MethodInfo(
        "fullgrad", "FullGrad", "gradient", lambda: methods.gradient.full_gradients,
        filters.normalize, False, False, "input-gradient plus every layer's bias-gradient",
        "Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780",
    ),
    MethodInfo(
        "occlusion", "Occlusion", "perturbation", lambda: methods.perturbation.occlusion,
        filters.normalize, False, False, "score lost when a sliding window is hidden "
        "(window: 1/8 of the image)", "Zeiler & Fergus, ECCV 2014, arXiv:1311.2901",
        params=_occlusion_params,
    ),
    MethodInfo(
        "rise", "RISE", "perturbation", lambda: methods.perturbation.rise, filters.normalize,
        False, False, "random masks averaged with the scores they get (1000 masks)",
        "Petsiuk et al., BMVC 2018, arXiv:1806.07421",
        params=lambda spatial: {"masks": 1000, "seed": 0},
    ),
)  # fmt: skip

#: Every method :func:`explain_prediction` and the command line know, by name.
METHODS: dict[str, MethodInfo] = {info.name: info for info in _CATALOGUE}

_ALIASES = {
    "grad-cam": "gradcam", "grad_cam": "gradcam", "gradcam++": "gradcampp",
    "grad-cam++": "gradcampp", "gradcamplusplus": "gradcampp", "score-cam": "scorecam",
    "layer-cam": "layercam", "xgrad-cam": "xgradcam", "hires-cam": "hirescam",
    "eigen-cam": "eigencam", "ablation-cam": "ablationcam", "saliency": "gradients",
    "gradient": "gradients", "vanilla_gradients": "gradients", "ig": "integrated_gradients",
    "integrated-gradients": "integrated_gradients", "gradient_x_input": "gradients_x_inputs",
    "gradients_x_input": "gradients_x_inputs", "input_x_gradient": "gradients_x_inputs",
    "full_gradients": "fullgrad", "full-grad": "fullgrad", "smooth-grad": "smoothgrad",
}  # fmt: skip


def get_method(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of a method name (case-insensitive; aliases such as ``grad-cam``).

    Raises:
        ValueError: for an unknown name; the message lists every known method.

    Example:
        >>> ke.explanation.get_method("Grad-CAM").reference
        'Selvaraju et al., ICCV 2017, arXiv:1610.02391'
    """
    if isinstance(name, MethodInfo):
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"`method` is a method name such as 'gradcam'; got a {type(name).__name__}. To run "
            "your own method function, call ke.explain(method, model, x, y)."
        )
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in METHODS:
        return METHODS[key]
    close = difflib.get_close_matches(key, [*METHODS, *_ALIASES], n=6, cutoff=0.6)
    close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))[:3]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown method {name!r}.{hint} Known methods: {', '.join(METHODS)}.")


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class TargetExplanation:
    """The explanation of one class (one output unit) of one prediction.

    Attributes:
        target: the class index (output unit) explained.
        name: its name, when class names were given, else ``None``.
        score: the model's output for it (a logit or a probability, as the
            model produces).
        probability: the softmax probability of the class (the output itself
            when it already is a probability distribution).
        heatmap: the map, ``(H, W)`` floats (in ``[0, 1]`` with the default
            post-processing), at the resolution of the model's input.
    """

    target: int
    name: str | None
    score: float
    probability: float
    heatmap: np.ndarray

    @property
    def label(self) -> str:
        """The class name, or ``"class <index>"``."""
        return self.name if self.name is not None else f"class {self.target}"

    def __repr__(self):
        return (
            f"TargetExplanation(target={self.target}, name={self.name!r}, score={self.score:.4g}, "
            f"probability={self.probability:.3f}, heatmap=<{self.heatmap.shape[0]}x"
            f"{self.heatmap.shape[1]}>)"
        )


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Explanation:
    """What :func:`explain_prediction` found for one image.

    Attributes:
        image: the picture as given, an RGB PIL image at its own resolution.
        inputs: what the model saw, ``(1, H, W, C)`` float32 (resized and
            preprocessed).
        targets: one :class:`TargetExplanation` per explained class, in the
            order asked (the top prediction first when ``targets=None``).
        method: the method's name (``"gradcam"``).
        layer: the explained layer (CAM methods; ``None`` for the others).
        model_name: the model's name.
    """

    image: Image.Image
    inputs: np.ndarray
    targets: tuple[TargetExplanation, ...]
    method: str
    layer: str | None
    model_name: str

    @property
    def heatmaps(self) -> np.ndarray:
        """Every target's heatmap, ``(targets, H, W)``."""
        return np.stack([t.heatmap for t in self.targets])

    @property
    def target_ids(self) -> list[int]:
        """The explained class indices."""
        return [t.target for t in self.targets]

    @property
    def target_names(self) -> list[str | None]:
        """The explained class names (``None`` where unknown)."""
        return [t.name for t in self.targets]

    @property
    def scores(self) -> np.ndarray:
        """The model's output for each explained class."""
        return np.array([t.score for t in self.targets], np.float32)

    @property
    def method_title(self) -> str:
        """The method's display name (``"Grad-CAM"``)."""
        info = METHODS.get(self.method)
        return info.title if info else self.method

    def overlay(self, index: int = 0, cmap="jet", alpha: float = 0.5) -> Image.Image:
        """The heatmap of ``targets[index]`` drawn over the picture.

        Args:
            index: which target (its position in ``targets``; 0 is the first,
                the top prediction by default).
            cmap: a matplotlib colormap or its name.
            alpha: the heatmap's weight in the blend.

        Returns:
            an RGB PIL image at the picture's resolution.

        Example:
            >>> ke.explain_prediction(model, "cat.jpg").overlay().save("cat_gradcam.png")
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"`index` is a position in `targets`; got {index!r}.")
        if not -len(self.targets) <= index < len(self.targets):
            raise IndexError(
                f"index {index} is out of range: this explanation has {len(self.targets)} "
                "target(s)."
            )
        heatmap = self.targets[index].heatmap
        return Image.fromarray(overlay_arrays(self.image, heatmap, cmap=cmap, alpha=alpha))

    def _caption(self, target: TargetExplanation) -> str:
        return f"{target.label}: {target.probability:.0%}"

    def figure(self, alpha: float = 0.5, **kwargs):
        """A matplotlib figure: the picture, then each target's overlay, titled.

        ``kwargs`` go to :func:`ke.utils.visualize`.
        """
        count = len(self.targets)
        return visualize(
            [self.image] * (count + 1),
            titles=["input", *(self._caption(t) for t in self.targets)],
            overlays=[None, *(t.heatmap for t in self.targets)],
            overlay_alpha=alpha,
            rows=1,
            **kwargs,
        )

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure(to_buffer=buffer)
        return buffer.getvalue()

    def __repr__(self):
        found = ", ".join(f"{t.label} {t.score:.4g}" for t in self.targets)
        layer = f" at '{self.layer}'" if self.layer else ""
        return f"<Explanation: {self.method} of '{self.model_name}'{layer}: {found}>"


# --------------------------------------------------------------------------- layers

_EXPOSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_UNCACHEABLE = object()


def _layer_key(layer):
    if layer is None:
        return ("automatic",)
    if isinstance(layer, (str, int)):
        return layer
    if isinstance(layer, (tuple, list)):
        return tuple(layer)
    if isinstance(layer, keras.layers.Layer):
        return ("layer", id(layer))
    return _UNCACHEABLE  # dicts and other descriptors


def _resolve_layer_name(model, layer):
    """Accept ``"outer/inner"`` paths, as :func:`describe_layer` reports them."""
    if isinstance(layer, str) and "/" in layer:
        names = [p[-1] for p, _ in inspection.flatten_layers(model)]
        if layer not in names:
            return tuple(part for part in layer.split("/") if part)
    return layer


def _expose(model, layer, input_shape):
    """An exposed model for ``layer`` (cached per model and layer)."""
    if isinstance(model, inspection.ExposedModel) and layer is None:
        return model
    if layer is None and not isinstance(model, inspection.ExposedModel):
        try:
            outputs = model.outputs
        except (AttributeError, ValueError):
            outputs = None
        if outputs and len(outputs) > 1:  # already [logits, activations]
            return model
    key = _layer_key(layer)
    try:
        cache = _EXPOSED.setdefault(model, {})
    except TypeError:
        cache = {}
    if key is _UNCACHEABLE or key not in cache:
        exposed = inspection.expose(
            model, arguments=_resolve_layer_name(model, layer), input_shape=input_shape
        )
        if key is _UNCACHEABLE:
            return exposed
        cache[key] = exposed
    return cache[key]


def describe_layer(model, tap) -> str:
    """A readable name for a tapped signal, usable as ``layer=`` again.

    The input of a pooling layer is reported as the layer producing it
    (``"features"``, or ``"base/features"`` inside a nested model) when the
    model's graph tells; otherwise as ``"<layer> (input)"``.
    """
    if tap.link != "input":
        return "/".join(tap.path) if tap.path else tap.layer.name
    try:
        nodes = tap.layer._inbound_nodes
        parents = nodes[0].parent_nodes if len(nodes) == 1 else []
        if len(parents) != 1:
            raise ValueError
        producer = parents[0].operation
        prefix = list(tap.path[:-1])
        path = prefix + [producer.name]
        while isinstance(producer, keras.Model) and len(producer.outputs) == 1:
            producer = producer.outputs[0]._keras_history[0]
            path.append(producer.name)
        inspection.get_nested_layer(model, tuple(path))
        return "/".join(path)
    except Exception:  # no graph (subclassed, Input-less): say what we tapped
        return tap.name


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


def _model_outputs(model, inputs) -> np.ndarray:
    outputs, _ = backend.forward(model, inputs)
    logits = keras.ops.convert_to_numpy(inspection.first_output(outputs))
    if logits.ndim != 2:
        raise ValueError(
            f"'{model.name}' outputs shape {tuple(logits.shape)}; explain_prediction explains "
            "classifiers, whose (first) output is (batch, classes)."
        )
    return logits[0]


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
    **params: Any,
) -> Explanation:
    """Explain a classifier's prediction on one picture.

    Args:
        model: a Keras 3 image classifier (any architecture: functional,
            Sequential, nested, subclassed), or an exposed model
            (``ke.inspection.expose``). Its first output is explained; it is
            never modified.
        image: a PIL image, a file path, or an array / backend tensor ``(H, W)``,
            ``(H, W, C)`` or ``(1, H, W, C)``. It is resized (Pillow, bilinear)
            to the model's input size and its channels matched (gray <-> RGB).
            PIL images and ``uint8`` arrays are pixels in ``[0, 255]``.
        targets: the class indices (or names, with ``class_names``) to explain;
            ``None`` explains the ``top_k`` highest outputs.
        layer: the layer a CAM method explains: a name (``"conv5"``, or a path
            ``"base/conv5"`` / ``("base", "conv5")`` into a nested model), an
            index in ``model.layers`` or a layer. ``None`` picks the input of the
            last global pooling layer (or the last spatial layer), and the
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
        **params: passed to ``ke.explain``: the method's own parameters and
            ``postprocessing`` / ``resizing`` to override the defaults.

    Returns:
        an :class:`Explanation`.

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
    info = get_method(method)
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"`model` must be a Keras 3 model; got a {type(model).__name__}. Load it with "
            "keras.saving.load_model(...)."
        )
    if layer is not None and not info.uses_layer:
        raise ValueError(
            f"The method {info.name!r} explains the input pixels and takes no `layer`; drop "
            "`layer`, or pick a CAM method ("
            + ", ".join(n for n, i in METHODS.items() if i.uses_layer)
            + ")."
        )
    input_shape = inspection.input_shape_of(model)
    inputs, picture = prepare_image(image, input_shape, preprocessing)
    outputs = _model_outputs(model, inputs)
    _check_class_names(class_names, outputs.shape[-1])
    chosen = _resolve_targets(targets, outputs, top_k, class_names)

    explained_model, layer_name = model, None
    if info.uses_layer:
        explained_model = _expose(model, layer, tuple(inputs.shape))
        taps = inspection.activation_taps(explained_model, input_shape=tuple(inputs.shape))
        layer_name = ", ".join(describe_layer(model, tap) for tap in taps)

    settings = {"postprocessing": info.postprocessing, "resizing": info.resizing}
    if info.params is not None:
        settings.update(info.params(tuple(inputs.shape[1:-1])))
    settings.update(params)
    units = np.array([chosen], np.int32)
    _, maps = explain(
        info.method, explained_model, inputs, units, batch_size=1, verbose=0, **settings
    )
    maps = np.asarray(maps[0], np.float32)  # (H, W, units)
    probabilities = _probabilities(outputs)
    explained = tuple(
        TargetExplanation(
            target=target,
            name=_class_name(class_names, target),
            score=float(outputs[target]),
            probability=float(probabilities[target]),
            heatmap=maps[..., position],
        )
        for position, target in enumerate(chosen)
    )
    name = getattr(model, "explained_model", model).name
    return Explanation(picture, inputs, explained, info.name, layer_name, name)
