"""Quick start: train a tiny CNN to find a bright square, then ask it *where* it looked.

Runs offline on any Keras 3 backend in well under a minute on a laptop CPU:

    KERAS_BACKEND=jax python examples/quickstart.py [--out quickstart.png]

Without ``KERAS_BACKEND``, it uses Keras' default backend if installed, else an
installed one (and says which).

It prints, for Grad-CAM and Gradients, how often the map's peak falls inside the
square (the pointing game), and writes a picture of the first few explanations.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # see docs/troubleshooting.md

from keras_explainable.cli.environment import use_installed_backend  # noqa: E402

use_installed_backend()  # before Keras is imported: an installed backend if Keras' is missing

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_explainable as ke  # noqa: E402

SIZE, SQUARE = 32, 8


def make_data(n, rng):
    """Noisy images; class 1 has a bright square somewhere, class 0 a dim one."""
    images = rng.normal(0.0, 0.3, (n, SIZE, SIZE, 1)).astype("float32")
    labels = rng.integers(0, 2, n)
    boxes = rng.integers(0, SIZE - SQUARE, (n, 2))
    for image, label, (top, left) in zip(images, labels, boxes, strict=True):
        image[top : top + SQUARE, left : left + SQUARE] += 2.0 if label else 0.5
    return images, labels, boxes


def build_model():
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="features"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="logits"),
        ]
    )


def pointing_game(maps, boxes):
    """Fraction of maps whose maximum lies inside the square."""
    hits = 0
    for m, (top, left) in zip(maps[..., 0], boxes, strict=True):
        i, j = np.unravel_index(np.argmax(m), m.shape)
        hits += top <= i < top + SQUARE and left <= j < left + SQUARE
    return hits / len(maps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="quickstart.png", help="where to write the picture")
    parser.add_argument("--samples", type=int, default=64, help="images to explain")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_train, y_train, _ = make_data(2000, rng)
    model = build_model()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)

    x, labels, boxes = make_data(args.samples, rng)
    print(f"backend: {keras.backend.backend()}")
    print(
        f"accuracy on new images: {np.mean(model.predict(x, verbose=0).argmax(-1) == labels):.2f}"
    )

    bright = labels == 1
    units = np.ones(args.samples, "int32")  # explain the "bright square" unit
    exposed = ke.inspection.expose(model)  # outputs [logits, input of the pooling layer]
    _, cams = ke.gradcam(exposed, x, units, batch_size=32, verbose=0)
    _, saliency = ke.gradients(model, x, units, batch_size=32, verbose=0)
    cam_hits = pointing_game(cams[bright], boxes[bright])
    print(f"Grad-CAM  pointing game (bright squares): {cam_hits:.2f}")
    print(
        f"Gradients pointing game (bright squares): "
        f"{pointing_game(saliency[bright], boxes[bright]):.2f}"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.flatnonzero(bright)[:4]
    figure, axes = plt.subplots(3, len(shown), figsize=(2.2 * len(shown), 6.6), squeeze=False)
    for column, i in enumerate(shown):
        for row, (title, overlay) in enumerate(
            [("input", None), ("Grad-CAM", cams[i, ..., 0]), ("Gradients", saliency[i, ..., 0])]
        ):
            axis = axes[row, column]
            axis.imshow(x[i, ..., 0], cmap="gray")
            if overlay is not None:
                axis.imshow(overlay, cmap="jet", alpha=0.5)
            axis.set_title(title)
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
