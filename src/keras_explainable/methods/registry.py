"""The one table of the package's explaining methods.

Every method that has a ``ke.*`` shortcut is described here once: its API name,
display title, family, the function that computes it (a ``"module:attr"``
string, imported only when the method is used), the defaults of its shortcut
(``postprocessing`` is the *name* of a :mod:`ke.filters` function, ``resizing``
a bool), whether it explains an intermediate layer, a one-line summary, the
paper, the old spellings it is also known by, and the parameters
:func:`ke.explain_prediction` adds for one picture.

From this table come the ``ke.*`` shortcuts, ``ke.explain_prediction``'s
``method=`` choices, ``keras-explainable methods`` and the methods table of
``docs/methods.md`` (:func:`markdown_table`; ``python -m keras_explainable.methods``
prints it).

This module imports neither Keras nor a framework: listing or looking up methods
is instant.

Example:
    >>> from keras_explainable.methods import registry
    >>> registry.get("Grad-CAM").name
    'gradcam'
    >>> registry.get("fullgrad").title
    'FullGrad'
    >>> method = registry.get("gradcam").load()  # keras_explainable.methods.cams.gradcam
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["FAMILIES", "METHODS", "MethodSpec", "get", "markdown_table", "resolve"]

#: The families, in the order they are listed.
FAMILIES = ("CAM", "gradient", "perturbation", "attention")

_LOCK = threading.Lock()
_LOADED: dict[str, Callable] = {}


def resolve(target: str) -> Any:
    """The object a ``"package.module:attribute"`` string names (imported now)."""
    module, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"{target!r} is not a 'module:attribute' string.")
    return getattr(importlib.import_module(module), attribute)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One explaining method of the package.

    Attributes:
        name: the API name: ``ke.<name>`` is its shortcut (``"gradcam"``,
            ``"full_gradients"``).
        title: the display name (``"Grad-CAM"``).
        family: ``"CAM"``, ``"gradient"``, ``"perturbation"`` or ``"attention"``.
        function: the method, as ``"module:attribute"``; see :meth:`load`.
        postprocessing: the name of the :mod:`ke.filters` function the shortcut
            applies by default (``None``: raw maps).
        resizing: whether the shortcut resizes the maps to the input by default.
        uses_layer: whether the method explains an intermediate layer (CAMs).
        summary: one line on what the map shows.
        reference: the paper, ``"Authors, venue year, arXiv:XXXX.XXXXX"``.
        aliases: other spellings accepted by :func:`get` (lower case).
        wraps: for a meta method bound to a base method (SmoothGrad), the base
            method as ``"module:attribute"``; :meth:`load` then returns
            ``function(base, **options)``.
        options: the keyword arguments of that call, as ``(name, value)`` pairs.
        explain_params: ``f(spatial_shape) -> dict``, the method parameters
            :func:`ke.explain_prediction` adds for a picture of that spatial
            size (e.g. occlusion's window); ``None`` for none.
        any_target: whether the method explains any ``target=``
            (:mod:`ke.targets`); ``False`` for CAM, whose weights are the
            classifier's (it takes only the default, the classes).
    """

    name: str
    title: str
    family: str
    function: str
    postprocessing: str | None
    resizing: bool
    uses_layer: bool
    summary: str
    reference: str
    aliases: tuple[str, ...] = ()
    wraps: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    explain_params: Callable[[tuple[int, ...]], dict] | None = None
    any_target: bool = True

    def load(self) -> Callable:
        """The explaining method, imported (and, for a meta method, built) on first use.

        One object per spec and process, so ``ke.explain`` reuses its compiled
        step whichever way the method is reached (shortcut, ``explain_prediction``,
        command line).
        """
        with _LOCK:
            method = _LOADED.get(self.name)
            if method is None:
                method = resolve(self.function)
                if self.wraps is not None:
                    method = method(resolve(self.wraps), **dict(self.options))
                _LOADED[self.name] = method
            return method

    @property
    def method(self) -> Callable:
        """Same as :meth:`load` (the name ``explanation.MethodInfo`` had)."""
        return self.load()

    @property
    def filter(self) -> Callable | None:
        """The default ``postprocessing`` as a function of :mod:`ke.filters`."""
        if self.postprocessing is None:
            return None
        return getattr(importlib.import_module("keras_explainable.filters"), self.postprocessing)

    @property
    def defaults(self) -> dict[str, Any]:
        """The shortcut's defaults for ``ke.explain``: ``postprocessing`` and ``resizing``."""
        return {"postprocessing": self.filter, "resizing": self.resizing}

    @property
    def params(self) -> Callable[[tuple[int, ...]], dict] | None:
        """Same as ``explain_params`` (the name ``explanation.MethodInfo`` had)."""
        return self.explain_params

    @property
    def call(self) -> str:
        """How the method is written in Python (``"methods.cams.gradcam"``)."""
        module, _, attribute = self.function.partition(":")
        module = module.removeprefix("keras_explainable.")
        if self.wraps is None:
            return f"{module}.{attribute}"
        base = self.wraps.partition(":")
        args = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"{module}.{attribute}({base[0].removeprefix('keras_explainable.')}.{base[2]}{args})"


def _occlusion_params(spatial):
    window = tuple(max(1, s // 8) for s in spatial)
    return {"window": window, "stride": tuple(max(1, w // 2) for w in window)}


def _rise_params(spatial):
    del spatial
    return {"masks": 1000, "seed": 0}


_CAMS = "keras_explainable.methods.cams"
_GRADIENT = "keras_explainable.methods.gradient"
_PERTURBATION = "keras_explainable.methods.perturbation"
_ATTENTION = "keras_explainable.methods.attention"


def _cam(name, title, summary, reference, aliases=()):
    return MethodSpec(
        name, title, "CAM", f"{_CAMS}:{name}", "positive_normalize", True, True, summary,
        reference, aliases,
    )  # fmt: skip


# SmoothGrad's seed: 0 everywhere (it was None in the ke.smoothgrad shortcut and 0 in
# explain_prediction): the noise comes from one keras.random.SeedGenerator(0), made when
# SmoothGrad is first used (never at import), so a fresh process gives the same maps for the
# same sequence of calls. For other noise, build your own: ke.methods.meta.smooth(..., seed=None).
_SMOOTHGRAD_OPTIONS = (("repetitions", 20), ("noise", 0.1), ("seed", 0))

_TABLE = (
    dataclasses.replace(
        _cam("cam", "CAM", "feature maps weighted by the classifier's weights (GAP heads)",
             "Zhou et al., CVPR 2016, arXiv:1512.04150"),
        any_target=False,
    ),
    _cam("gradcam", "Grad-CAM", "feature maps weighted by their mean gradient",
         "Selvaraju et al., ICCV 2017, arXiv:1610.02391", ("grad-cam", "grad_cam")),
    _cam("gradcampp", "Grad-CAM++", "feature maps weighted by weighted positive gradients",
         "Chattopadhay et al., WACV 2018, arXiv:1710.11063",
         ("gradcam++", "grad-cam++", "gradcamplusplus")),
    _cam("xgradcam", "XGrad-CAM", "gradients averaged with the activations as weights",
         "Fu et al., BMVC 2020, arXiv:2008.02312", ("xgrad-cam",)),
    _cam("layercam", "LayerCAM", "every position weighted by its own positive gradient",
         "Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943", ("layer-cam",)),
    _cam("hirescam", "HiResCAM", "gradient times activation, summed over channels",
         "Draelos & Carin, 2020, arXiv:2011.08891", ("hires-cam",)),
    _cam("eigencam", "Eigen-CAM", "first principal component of the feature maps "
         "(the same map for every class)", "Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299",
         ("eigen-cam",)),
    _cam("scorecam", "Score-CAM", "feature maps weighted by the score of the input they mask",
         "Wang et al., CVPR-W 2020, arXiv:1910.01279", ("score-cam",)),
    _cam("ablationcam", "Ablation-CAM", "feature maps weighted by the score lost without them",
         "Desai & Ramaswamy, WACV 2020, doi:10.1109/WACV45572.2020.9093360", ("ablation-cam",)),
    MethodSpec(
        "gradients", "Gradients", "gradient", f"{_GRADIENT}:gradients", "normalize", False,
        False, "absolute gradient of the score w.r.t. each pixel",
        "Simonyan et al., 2013, arXiv:1312.6034",
        ("saliency", "gradient", "vanilla_gradients"),
    ),
    MethodSpec(
        "gradients_x_inputs", "Gradient x Input", "gradient", f"{_GRADIENT}:gradients_x_inputs",
        "absolute_normalize", False, False,
        "pixel x gradient, summed over channels (absolute value)",
        "Shrikumar et al., 2016, arXiv:1605.01713",
        ("gradient_x_input", "gradients_x_input", "input_x_gradient"),
    ),
    MethodSpec(
        "integrated_gradients", "Integrated Gradients", "gradient",
        f"{_GRADIENT}:integrated_gradients", "absolute_normalize", False, False,
        "gradients integrated along the path from a black image, times the input",
        "Sundararajan et al., ICML 2017, arXiv:1703.01365", ("ig", "integrated-gradients"),
    ),
    MethodSpec(
        "smoothgrad", "SmoothGrad", "gradient", "keras_explainable.methods.meta:smooth",
        "normalize", False, False, "gradients averaged over 20 noisy copies (10% noise)",
        "Smilkov et al., 2017, arXiv:1706.03825", ("smooth-grad", "smooth_grad"),
        wraps=f"{_GRADIENT}:gradients", options=_SMOOTHGRAD_OPTIONS,
    ),
    MethodSpec(
        "full_gradients", "FullGrad", "gradient", f"{_GRADIENT}:full_gradients", "normalize",
        False, False, "input-gradient plus every layer's bias-gradient",
        "Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780",
        ("fullgrad", "full-grad", "full_grad", "full-gradients", "full_gradient"),
    ),
    MethodSpec(
        "occlusion", "Occlusion", "perturbation", f"{_PERTURBATION}:occlusion", "normalize",
        False, False, "score lost when a sliding window is hidden",
        "Zeiler & Fergus, ECCV 2014, arXiv:1311.2901", explain_params=_occlusion_params,
    ),
    MethodSpec(
        "rise", "RISE", "perturbation", f"{_PERTURBATION}:rise", "normalize", False, False,
        "random masks averaged with the scores they get",
        "Petsiuk et al., BMVC 2018, arXiv:1806.07421", explain_params=_rise_params,
    ),
    MethodSpec(
        "attention_rollout", "Attention rollout", "attention", f"{_ATTENTION}:attention_rollout",
        "positive_normalize", True, False,
        "attention of the class token to the patches, multiplied through the blocks "
        "(the same map for every class; transformers)",
        "Abnar & Zuidema, ACL 2020, arXiv:2005.00928", ("rollout", "attention-rollout"),
    ),
    MethodSpec(
        "transformer_attribution", "Transformer attribution", "attention",
        f"{_ATTENTION}:transformer_attribution", "positive_normalize", True, False,
        "attention weighted by its positive gradient, rolled through the blocks (transformers)",
        "Chefer, Gur & Wolf, ICCV 2021, arXiv:2103.15679",
        ("transformer-attribution", "chefer"),
    ),
)  # fmt: skip

#: Every method, by API name, in the order they are listed.
METHODS: Mapping[str, MethodSpec] = {spec.name: spec for spec in _TABLE}

#: Every accepted spelling (lower case) -> the API name.
ALIASES: Mapping[str, str] = {alias: spec.name for spec in _TABLE for alias in spec.aliases}


def _check_table():
    for spec in _TABLE:
        if spec.family not in FAMILIES:
            raise AssertionError(f"{spec.name}: unknown family {spec.family!r}")
    clashes = set(ALIASES) & set(METHODS)
    if clashes or len(ALIASES) != sum(len(s.aliases) for s in _TABLE):
        raise AssertionError(f"method aliases clash: {sorted(clashes)}")


_check_table()


def get(name) -> MethodSpec:
    """The :class:`MethodSpec` of a method name: case-insensitive, old spellings accepted.

    Args:
        name: an API name (``"gradcam"``), an alias (``"Grad-CAM"``,
            ``"fullgrad"``) or a :class:`MethodSpec` (returned as is).

    Raises:
        TypeError: for something that is not a name.
        ValueError: for an unknown name; the message suggests the closest names and
            lists every known method.
    """
    if isinstance(name, MethodSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"`method` is a method name such as 'gradcam'; got a {type(name).__name__}. To run "
            "your own method function, call ke.explain(method, model, x, y)."
        )
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in METHODS:
        return METHODS[key]
    close = difflib.get_close_matches(key, [*METHODS, *ALIASES], n=6, cutoff=0.6)
    close = list(dict.fromkeys(ALIASES.get(c, c) for c in close))[:3]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown method {name!r}.{hint} Known methods: {', '.join(METHODS)}.")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bare pipe would end the table cell


def _linked(reference: str) -> str:
    head, marker, tail = reference.partition("arXiv:")
    if not marker:
        return reference
    return f"{head}[arXiv:{tail}](https://arxiv.org/abs/{tail})"


def markdown_table() -> str:
    """The methods table of the docs, rendered from :data:`METHODS` (one row per method).

    README.md and docs/methods.md hold it between the lines ``<!-- methods table: ...``
    and ``<!-- end of methods table -->``; ``tests/test_docs.py`` checks that they match.
    """
    rows = [
        "| shortcut | method | family | default post-processing | resized | what the map shows "
        "| reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        for spec in METHODS.values():
            if spec.family != family:
                continue
            post = f"`filters.{spec.postprocessing}`" if spec.postprocessing else "none"
            rows.append(
                f"| `ke.{spec.name}` | {spec.title} (`{spec.call}`) | {spec.family} | {post} "
                f"| {'yes' if spec.resizing else 'no'} | {_cell(spec.summary)} "
                f"| {_cell(_linked(spec.reference))} |"
            )
    return "\n".join(rows) + "\n"
