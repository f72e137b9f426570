"""Sanity check: model-parameter randomization (Adebayo et al., NeurIPS 2018).

A map that explains the model must change when the model's weights are
destroyed. :func:`model_randomization` re-initializes the layers of a *clone*
of the model from the logits down (cascading) or one at a time (independent),
recomputes the maps at each stage and compares them with the original maps
by Spearman rank correlation (of the maps and of their absolute values) and by
SSIM. The user's model is never modified.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np

from .. import engine, inspection
from .._layers import own_weights
from ._common import Scorer, as_images, normalize_maps

# --------------------------------------------------------------------------- similarities


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks (1-based) of each row, ties sharing their average rank."""
    ranks = np.empty(values.shape, dtype=np.float64)
    for i, row in enumerate(values):
        _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        ranks[i] = (ends - (counts - 1) / 2.0)[inverse]
    return ranks


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation between paired maps, per pair.

    Pearson correlation of the (average, for ties) ranks of the flattened maps;
    NaN where a map is constant (the correlation is undefined).

    Args:
        a: ``(N, ...)`` maps.
        b: ``(N, ...)`` maps of the same shape.

    Returns:
        ``(N,)`` correlations in [-1, 1].

    Example:
        >>> ke.metrics.spearman(maps, maps[:, ::-1])

    References:
        Spearman, "The Proof and Measurement of Association between Two Things", 1904;
        used on saliency maps by Adebayo et al., NeurIPS 2018.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Compared maps must have the same shape; got {a.shape} and {b.shape}.")
    ra = _average_ranks(a.reshape(len(a), -1))
    rb = _average_ranks(b.reshape(len(b), -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ra * rb).sum(axis=1) / norm, np.nan)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    window = np.exp(-(offsets**2) / (2 * sigma**2))
    return window / window.sum()


def _filter_valid(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of ``(N, H, W)`` by ``window`` along H and W."""
    size = len(window)
    rows = sum(window[k] * images[:, k : images.shape[1] - size + 1 + k] for k in range(size))
    return sum(window[k] * rows[:, :, k : rows.shape[2] - size + 1 + k] for k in range(size))


def ssim(
    a, b, data_range: float = 1.0, filter_size: int = 11, sigma: float = 1.5, k1=0.01, k2=0.03
) -> np.ndarray:
    """Structural similarity (SSIM) of paired 2-D maps, per pair.

    The mean over valid windows of

        SSIM = (2 mu_a mu_b + C1)(2 sigma_ab + C2)
               / ((mu_a^2 + mu_b^2 + C1)(sigma_a^2 + sigma_b^2 + C2)),

    with Gaussian-weighted local statistics (window ``filter_size``, ``sigma``),
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, ``L = data_range`` (Wang et al., 2004;
    the defaults of ``keras.ops.image.ssim`` and ``tf.image.ssim``). Maps
    smaller than the window use a window of their size (odd).

    Args:
        a: ``(N, H, W)`` maps.
        b: ``(N, H, W)`` maps.
        data_range: ``L``, the value range of the maps.
        filter_size: the window's side.
        sigma: the window's Gaussian standard deviation.
        k1: the luminance constant.
        k2: the contrast constant.

    Returns:
        ``(N,)`` SSIM values (1 for identical maps).

    Example:
        >>> ke.metrics.ssim(maps, randomized_maps)

    References:
        Wang, Bovik, Sheikh & Simoncelli, "Image Quality Assessment: From Error
        Visibility to Structural Similarity", IEEE TIP 2004.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"ssim takes two (N, H, W) stacks of maps; got {a.shape} and {b.shape}.")
    size = min(int(filter_size), a.shape[1], a.shape[2])
    size -= 1 - size % 2  # odd
    window = _gaussian_window(size, sigma)
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a**2
    var_b = _filter_valid(b * b, window) - mu_b**2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return value.mean(axis=(1, 2))


# --------------------------------------------------------------------------- cloning


def _clone(model, sample):
    """A copy of ``model`` with its own variables holding the same values."""
    exposed = model if isinstance(model, inspection.ExposedModel) else None
    source = exposed.explained_model if exposed is not None else model
    try:
        clone = keras.models.clone_model(source)
    except Exception as error:
        raise TypeError(
            f"The sanity check randomizes a clone of the model, and '{source.name}' could not be "
            f"cloned with keras.models.clone_model ({type(error).__name__}: {error}). Use a "
            "functional or Sequential model, or give the subclassed model get_config() and "
            "from_config()."
        ) from error
    if not clone.built or not clone.weights:
        clone(sample)
    clone.set_weights(source.get_weights())
    originals = {id(v) for v in model.weights} | {id(v) for v in source.weights}
    if any(id(v) in originals for v in clone.weights):  # never touch the user's weights
        raise RuntimeError(f"The clone of '{source.name}' shares variables with it; aborting.")
    if exposed is None:
        return clone, clone

    def descriptor(tap):
        return {"name": tap.path, "link": tap.link, "node": tap.call_index}

    explained = inspection.expose(
        clone,
        arguments=[descriptor(t) for t in exposed.activation_taps],
        outputs=descriptor(exposed.logits_tap),
    )
    return explained, clone


def randomization_layers(model) -> list[tuple[str, keras.layers.Layer]]:
    """The layers with weights, from the output down, as ``(path, layer)``.

    Nested models and layers holding layers (KerasHub's encoders and blocks, a
    custom block) are unrolled; the order is the reverse of the models' own
    (topological, or assignment) layer order, i.e. the cascading order of
    Adebayo et al. A layer holding layers is listed, after its sub-layers, when
    it holds weights of its own (a ViT's class token or position embedding):
    its stage randomizes those only (:func:`keras_explainable._layers.own_weights`),
    so that the stages together randomize every weight of the model, each once.

    Args:
        model: a Keras model or an ``ExposedModel``.

    Returns:
        a list of ``(path, layer)``, ``path`` like ``"base/conv1"``.

    Example:
        >>> [path for path, _ in ke.metrics.randomization_layers(model)]
        ['logits', 'features', 'conv1']

    References:
        Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    if isinstance(model, inspection.ExposedModel):
        model = model.explained_model
    seen, result = set(), []
    walk = [((model.name,), model), *inspection.flatten_layers(model, include_models=True)]
    for path, layer in walk:  # containers before their sub-layers: reversed, after them
        if own_weights(layer) and id(layer) not in seen:
            seen.add(id(layer))
            result.append(("/".join(path), layer))
    return result[::-1]


def _initializer_of(layer, variable, initializer):
    if initializer is not None:
        return keras.initializers.get(initializer)
    name = variable.name.split("/")[-1].split(":")[0]
    candidates = [f"{name}_initializer", name.replace("_kernel", "") + "_initializer"]
    if name == "kernel":
        candidates.append("depthwise_initializer")
    if name == "recurrent_kernel":
        candidates.append("recurrent_initializer")
    for attribute in candidates:
        found = getattr(layer, attribute, None)
        if isinstance(found, keras.initializers.Initializer):
            return found
    return keras.initializers.TruncatedNormal(stddev=0.05)


def _reinitialize(layer, rng, initializer=None, whole=True):
    """New values for ``layer``'s weights (``whole=False``: only those it holds itself)."""
    for variable in layer.weights if whole else own_weights(layer):
        init = _initializer_of(layer, variable, initializer)
        config = init.get_config()
        if "seed" in config:
            config["seed"] = int(rng.integers(2**31 - 1))
            init = type(init).from_config(config)
        variable.assign(init(tuple(variable.shape), dtype=variable.dtype))


# --------------------------------------------------------------------------- the check


class RandomizationResult(NamedTuple):
    """The result of :func:`model_randomization`; one row per stage.

    Stage 0 is the intact clone (similarities 1: a check of the check); stage
    ``k`` has layer ``layers[k]`` randomized (and, cascading, every layer above).

    Attributes:
        layers: ``(S,)`` names: ``"none"`` then the randomized layers' paths.
        spearman: ``(S, N)`` Spearman correlation with the original maps.
        spearman_abs: ``(S, N)`` the same on absolute values.
        ssim: ``(S, N)`` SSIM of the min-max normalised maps.
        maps: ``(S, N, H, W)`` the maps of every stage, or None.
        mode: ``"cascading"`` or ``"independent"``.
    """

    layers: list
    spearman: np.ndarray
    spearman_abs: np.ndarray
    ssim: np.ndarray
    maps: np.ndarray | None
    mode: str

    def table(self) -> list[dict]:
        """Per stage, the means over images: ``{stage, layer, spearman, spearman_abs, ssim}``."""
        rows = []
        for k, layer in enumerate(self.layers):
            row = {"stage": k, "layer": layer}
            for key in ("spearman", "spearman_abs", "ssim"):
                values = getattr(self, key)[k]
                values = values[np.isfinite(values)]
                row[key] = float(values.mean()) if values.size else float("nan")
            rows.append(row)
        return rows

    def __str__(self):
        lines = [f"{'stage':>5}  {'randomized (' + self.mode + ')':<36}{'spearman':>9}"
                 f"{'spearman(|m|)':>15}{'ssim':>8}"]  # fmt: skip
        for row in self.table():
            lines.append(
                f"{row['stage']:>5}  {row['layer'][:36]:<36}{row['spearman']:>9.3f}"
                f"{row['spearman_abs']:>15.3f}{row['ssim']:>8.3f}"
            )
        return "\n".join(lines)


def model_randomization(
    method,
    model,
    x,
    y=None,
    mode: str = "cascading",
    layers=None,
    initializer=None,
    seed: int = 0,
    batch_size: int | None = None,
    return_maps: bool = False,
    **explain_params,
) -> RandomizationResult:
    """Model-parameter randomization test of an explaining method.

    1. Explain ``x`` with ``method`` on ``model`` (the original maps ``M_0``).
    2. Clone the model (``keras.models.clone_model`` + the same weights).
    3. For each stage ``k = 1..L``, re-initialize the clone's layer ``l_k`` —
       layers with weights from the logits down — keeping the earlier stages'
       randomization (``mode="cascading"``) or restoring the trained weights
       first (``"independent"``), and explain again (``M_k``).
    4. Compare ``M_k`` with ``M_0`` per image: Spearman rank correlation of the
       maps and of their absolute values, and SSIM of the min-max normalised
       maps (:func:`ssim`).

    A method passes when the similarities fall towards 0 as more layers are
    randomized (gradients and Grad-CAM do; Guided Backprop does not, in the
    paper). Each layer is re-initialized with its own initializers (Keras'
    ``kernel_initializer``, ``bias_initializer``, ... — zeros stay zeros),
    seeded from ``seed``, or with ``initializer`` for every weight. The units
    explained are the same at every stage: ``y``, or the original model's top-1
    class.

    Args:
        method: an explaining method, e.g. ``ke.methods.cams.gradcam``.
        model: a functional or Sequential model (or an ``ExposedModel`` of one);
            never modified.
        x: images ``(N, H, W, C)``.
        y: ``(N,)`` classes; ``None`` = the original model's top-1 prediction.
        mode: ``"cascading"`` (the paper's main test) or ``"independent"``.
        layers: the layers to randomize, in order, as paths/names (default:
            every layer with weights, from the output down, a layer holding
            layers for its own weights only: :func:`randomization_layers`); a
            layer named here is randomized whole, its sub-layers included.
        initializer: ``None`` (each layer's own) or a Keras initializer (name,
            instance or config) for every weight.
        seed: seed of the re-initializations.
        batch_size: passed to ``ke.explain``.
        return_maps: also return every stage's maps.
        **explain_params: passed to ``ke.explain`` (``postprocessing``,
            ``resizing``, ``target``, the method's own parameters, ...); with
            ``y=None`` the top-1 unit is the one ``target`` scores highest.

    Returns:
        :class:`RandomizationResult`; ``result.table()`` gives the per-stage means
        and ``print(result)`` a table.

    Example:
        >>> result = ke.metrics.model_randomization(ke.methods.cams.gradcam, model, x, y)
        >>> print(result)

    References:
        Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for
        Saliency Maps", NeurIPS 2018.
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"`mode` is 'cascading' or 'independent'; got {mode!r}.")
    x = as_images(x)
    if y is None:
        target = explain_params.get("target")
        y = Scorer(model, None, batch_size or 32, target=target).units(x, None)
    params = dict(explain_params, verbose=0, batch_size=batch_size)

    def explain(current):
        _, maps = engine.explain(method, current, x, y, **params)
        if maps.ndim != 4 or maps.shape[-1] != 1:
            raise ValueError(
                f"The sanity check compares one map per image; the method returned {maps.shape}. "
                "Pass y with one class per image."
            )
        return maps[..., 0].astype(np.float64)

    explained, clone = _clone(model, x[:1])  # fails early on models that cannot be cloned
    original = explain(model)
    stages = randomization_layers(clone)
    if layers is not None:
        by_name = {path: layer for path, layer in stages}
        by_name.update({layer.name: layer for _, layer in stages})
        wanted = [layers] if isinstance(layers, str) else list(layers)
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            raise ValueError(
                f"Unknown layers {unknown}; layers with weights: {[p for p, _ in stages]}."
            )
        stages = [(name, by_name[name]) for name in wanted]
    trained = clone.get_weights()
    rng = np.random.default_rng(seed)
    all_maps = [explain(explained)]
    for _, layer in stages:
        if mode == "independent":
            clone.set_weights(trained)
        _reinitialize(layer, rng, initializer, whole=layers is not None)
        all_maps.append(explain(explained))
    all_maps = np.stack(all_maps)
    reference = np.broadcast_to(original, all_maps.shape)
    flat = lambda m: m.reshape(-1, *m.shape[2:])
    shape = all_maps.shape[:2]
    result = RandomizationResult(
        ["none"] + [path for path, _ in stages],
        spearman(flat(reference), flat(all_maps)).reshape(shape),
        spearman(np.abs(flat(reference)), np.abs(flat(all_maps))).reshape(shape),
        ssim(normalize_maps(flat(reference)), normalize_maps(flat(all_maps))).reshape(shape),
        all_maps if return_maps else None,
        mode,
    )
    return result
