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

    def _repr_png_(self) -> bytes:
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
