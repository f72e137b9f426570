"""The result of :func:`ke.explain_prediction`: :class:`Explanation` and its targets.

Re-exported by :mod:`keras_explainable.explanation`, where users find them.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from .methods.registry import METHODS
from .utils.visualization import overlay as overlay_arrays
from .utils.visualization import visualize

__all__ = ["Explanation", "TargetExplanation"]


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class TargetExplanation:
    """The explanation of one class (one output unit) of one prediction.

    Attributes:
        target: the class index (output unit) explained.
        name: its name, when class names were given, else ``None``.
        score: the model's output for it (a logit or a probability, as the
            model produces).
        probability: the softmax probability of the class (the output itself
            when it already is a probability distribution); NaN when the
            explained ``target=`` scores no classes (a regression value).
        heatmap: the map, ``(H, W)`` floats (in ``[0, 1]`` with the default
            post-processing), at the resolution of the model's input; for a
            text, one signed weight per token ``(tokens,)``.
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
            f"probability={self.probability:.3f}, "
            f"heatmap=<{'x'.join(str(d) for d in self.heatmap.shape)}>)"
        )


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Explanation:
    """What :func:`explain_prediction` found for one image or one text.

    Attributes:
        image: the picture as given, an RGB PIL image at its own resolution
            (``None`` for a text).
        inputs: what the model saw, ``(1, H, W, C)`` float32 (resized and
            preprocessed); for a text its token ids (a dict for KerasHub models).
        targets: one :class:`TargetExplanation` per explained class, in the
            order asked (the top prediction first when ``targets=None``).
        method: the method's name (``"gradcam"``).
        layer: the explained layer (CAM methods; ``None`` for the others).
        model_name: the model's name.
        tokens: a text's token strings (``None`` for a picture); each target's
            ``heatmap`` then holds one signed weight per token.
        token_mask: per token, False at padding (a text only).
        text: the text as given (a text only).
    """

    image: Image.Image | None
    inputs: np.ndarray
    targets: tuple[TargetExplanation, ...]
    method: str
    layer: str | None
    model_name: str
    tokens: tuple[str, ...] | None = None
    token_mask: tuple[bool, ...] | None = None
    text: str | None = None

    @property
    def weights(self) -> np.ndarray:
        """A text's per-token weights, ``(targets, tokens)`` (same as ``heatmaps``)."""
        return self.heatmaps

    def to_html(self, index: int | None = None, merge_words: bool = False) -> str:
        """A text's tokens highlighted by their weights: green for, red against the class.

        Args:
            index: one target (its position in ``targets``); ``None``: every target,
                one line each.
            merge_words: join word pieces (``##ing``, ``▁word``) into words,
                summing their weights.

        Returns:
            an HTML fragment (Jupyter shows it inline; the report embeds it).
        """
        from .text._html import highlight  # noqa: PLC0415  (text only)

        if self.tokens is None:
            raise TypeError(
                "to_html() shows a text's token weights; this explanation is of a picture: "
                "use overlay() or figure()."
            )
        chosen = self.targets if index is None else [self.targets[index]]
        skip = None if self.token_mask is None else [not real for real in self.token_mask]
        return "".join(
            highlight(self.tokens, t.heatmap, merge_words, self._caption(t), skip) for t in chosen
        )

    def _repr_html_(self) -> str | None:
        return None if self.tokens is None else self.to_html()

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
        spec = METHODS.get(self.method)
        return spec.title if spec else self.method

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
        if self.image is None:
            raise TypeError("overlay() draws on a picture; for a text use to_html().")
        heatmap = self.targets[index].heatmap
        return Image.fromarray(overlay_arrays(self.image, heatmap, cmap=cmap, alpha=alpha))

    def _caption(self, target: TargetExplanation) -> str:
        if np.isnan(target.probability):  # a target that scores no classes
            return f"{target.label}: {target.score:.3g}"
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

    def _repr_png_(self) -> bytes | None:
        if self.tokens is not None:  # a text shows itself as HTML
            return None
        buffer = io.BytesIO()
        self.figure(to_buffer=buffer)
        return buffer.getvalue()

    def __repr__(self):
        found = ", ".join(f"{t.label} {t.score:.4g}" for t in self.targets)
        layer = f" at '{self.layer}'" if self.layer else ""
        return f"<Explanation: {self.method} of '{self.model_name}'{layer}: {found}>"


# their public home: repr, docs and pickles name keras_explainable.explanation
for _klass in (TargetExplanation, Explanation):
    _klass.__module__ = "keras_explainable.explanation"
del _klass
