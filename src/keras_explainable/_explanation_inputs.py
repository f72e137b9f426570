"""The result of :func:`ke.explain_prediction` on a multi-input model.

One prediction, several inputs: :class:`InputsExplanation` holds what is shared
(the explained classes, their scores, the method and layer) and one
:class:`InputExplanation` per model input, keyed by the input's name in
``model.inputs`` order: an image gets heatmaps and overlays, a feature vector one
signed weight per feature (a table and a bar chart), a 1-D signal a curve, and
an input that was not explained (token ids, or the other branch of a CAM) says
so with ``heatmaps=None``.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping

import numpy as np
from PIL import Image

from .methods.registry import METHODS
from .utils.visualization import overlay as overlay_arrays

__all__ = ["InputExplanation", "InputsExplanation"]


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class InputExplanation:
    """One input of a multi-input prediction and its maps.

    Attributes:
        name: the model input's name.
        kind: ``"image"`` (``(H, W, C)``), ``"features"`` (a vector ``(F,)``),
            ``"signal"`` (another rank) or ``"integer"`` (ids or codes: fed as
            they are, never explained).
        values: what the model saw, without the batch axis.
        heatmaps: ``(targets, *spatial)`` (images ``(targets, H, W)``, features
            ``(targets, F)``), or ``None`` where this input was not explained.
        image: an image input's picture (RGB PIL, as given), else ``None``.
        feature_names: a feature vector's names (``feature 0``, ... by default).
        labels: the explained classes' labels, in the order of ``heatmaps``.
        note: why ``heatmaps`` is ``None`` (empty otherwise).
    """

    name: str
    kind: str
    values: np.ndarray
    heatmaps: np.ndarray | None
    image: Image.Image | None = None
    feature_names: tuple[str, ...] | None = None
    labels: tuple[str, ...] = ()
    note: str = ""

    @property
    def explained(self) -> bool:
        return self.heatmaps is not None

    def _heatmap(self, index: int) -> np.ndarray:
        if self.heatmaps is None:
            raise ValueError(f"The input {self.name!r} was not explained: {self.note}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"`index` is a position in the explained targets; got {index!r}.")
        if not -len(self.heatmaps) <= index < len(self.heatmaps):
            raise IndexError(
                f"index {index} is out of range: {len(self.heatmaps)} target(s) were explained."
            )
        return self.heatmaps[index]

    def overlay(self, index: int = 0, cmap="jet", alpha: float = 0.5) -> Image.Image:
        """An image input's heatmap of ``targets[index]`` drawn over its picture."""
        if self.kind != "image":
            raise TypeError(
                f"overlay() draws on a picture; the input {self.name!r} is a {self.kind} input: "
                "use table() or figure()."
            )
        heatmap = self._heatmap(index)
        return Image.fromarray(overlay_arrays(self.image, heatmap, cmap=cmap, alpha=alpha))

    def table(self, index: int = 0) -> list[tuple[str, float, float]]:
        """A feature vector's ``(feature, value, weight)`` rows, the largest ``|weight|`` first."""
        if self.kind != "features":
            raise TypeError(
                f"table() lists a feature vector's weights; the input {self.name!r} is a "
                f"{self.kind} input: use overlay() or figure()."
            )
        heatmap = self._heatmap(index)
        rows = [
            (name, float(value), float(weight))
            for name, value, weight in zip(self.feature_names, self.values, heatmap)
        ]
        return sorted(rows, key=lambda row: -abs(row[2]))

    def draw(self, axis, index: int = 0, alpha: float = 0.5) -> None:
        """Draw this input's map of ``targets[index]`` on a matplotlib ``axis``."""
        axis.set_title(f"{self.name}: {self.labels[index]}" if self.labels else self.name)
        if self.heatmaps is None:
            axis.text(0.5, 0.5, f"not explained:\n{self.note}", ha="center", va="center", wrap=True)
            axis.axis("off")
        elif self.kind == "image":
            axis.imshow(self.overlay(index, alpha=alpha))
            axis.axis("off")
        elif self.kind == "features":
            weights = self._heatmap(index)
            colors = ["tab:green" if w >= 0 else "tab:red" for w in weights]
            positions = np.arange(len(weights))
            axis.barh(positions, weights, color=colors)
            axis.set_yticks(
                positions, [f"{n} = {v:.3g}" for n, v in zip(self.feature_names, self.values)]
            )
            axis.invert_yaxis()
            axis.axvline(0, color="black", linewidth=0.5)
        else:
            heatmap = self._heatmap(index)
            if heatmap.ndim == 1:
                axis.plot(heatmap)
            else:  # a volume or a video: its middle slice
                axis.imshow(heatmap[tuple(s // 2 for s in heatmap.shape[:-2])], cmap="jet")
                axis.axis("off")

    def __repr__(self):
        shape = "x".join(str(d) for d in self.values.shape)
        maps = "not explained" if self.heatmaps is None else f"{len(self.heatmaps)} map(s)"
        return f"<InputExplanation {self.name!r}: {self.kind} {shape}, {maps}>"


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class InputsExplanation(Mapping):
    """What :func:`explain_prediction` found for one prediction of a multi-input model.

    A mapping ``{input name: InputExplanation}`` in ``model.inputs`` order
    (``explanation["image"].overlay()``, ``explanation["features"].table()``),
    plus what every input shares.

    Attributes:
        inputs: ``{name: InputExplanation}``.
        target_ids: the explained class indices (output units).
        target_names: their names (``None`` where unknown).
        scores: the model's score for each (what the target scores).
        probabilities: each one's softmax probability (NaN: the target scores no classes).
        method: the method's name; ``layer``: a CAM method's layer, else ``None``.
        model_name: the model's name.
    """

    inputs: dict[str, InputExplanation]
    target_ids: tuple[int, ...]
    target_names: tuple[str | None, ...]
    scores: np.ndarray
    probabilities: np.ndarray
    method: str
    layer: str | None
    model_name: str

    def __getitem__(self, name):
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
            return list(self.inputs.values())[name]
        try:
            return self.inputs[name]
        except KeyError:
            known = list(self.inputs)
            raise KeyError(f"{name!r} is not an input of '{self.model_name}': {known}") from None

    def __iter__(self):
        return iter(self.inputs)

    def __len__(self):
        return len(self.inputs)

    @property
    def labels(self) -> list[str]:
        return [
            n if n is not None else f"class {i}" for i, n in zip(self.target_ids, self.target_names)
        ]

    @property
    def method_title(self) -> str:
        spec = METHODS.get(self.method)
        return spec.title if spec else self.method

    def figure(self, alpha: float = 0.5, to_file=None, to_buffer=None):
        """A matplotlib figure: a row per explained class, a column per input.

        Images show their overlay, feature vectors a bar per feature (green for
        the class, red against), 1-D signals a curve; an input not explained
        says why.
        """
        import matplotlib.pyplot as plt  # noqa: PLC0415

        rows, columns = len(self.target_ids), len(self.inputs)
        figure, axes = plt.subplots(
            rows, columns, figsize=(3.6 * columns, 3.2 * rows), squeeze=False
        )
        for row in range(rows):
            for column, part in enumerate(self.inputs.values()):
                part.draw(axes[row, column], row, alpha)
        figure.suptitle(f"{self.method_title} of '{self.model_name}'")
        figure.tight_layout()
        if to_file is not None:
            figure.savefig(to_file)
        if to_buffer is not None:
            figure.savefig(to_buffer, format="png")
        if to_file is not None or to_buffer is not None:
            plt.close(figure)
        return figure

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure(to_buffer=buffer)
        return buffer.getvalue()

    def __repr__(self):
        found = ", ".join(f"{label} {score:.4g}" for label, score in zip(self.labels, self.scores))
        layer = f" at '{self.layer}'" if self.layer else ""
        parts = ", ".join(f"{n} ({p.kind})" for n, p in self.inputs.items())
        return f"<InputsExplanation: {self.method} of '{self.model_name}'{layer}: {found}; {parts}>"


for _klass in (InputExplanation, InputsExplanation):
    _klass.__module__ = "keras_explainable.explanation"
del _klass
