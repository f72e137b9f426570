"""Train the small demo model shipped in ``keras_explainable/data`` and draw its sample images.

The data is made here, offline: coloured shapes (circle, square, triangle, cross,
star) drawn at random places, sizes and angles over random textures (stripes,
checkers, smooth noise, gradients), with thin clutter lines on top. A fifth of the
training images hold two shapes of different classes with a half/half label, so
the model learns to answer for each object where it is: its Grad-CAM maps for
the two top classes point at the two shapes.

    KERAS_BACKEND=jax python scripts/train_demo_model.py

writes ``src/keras_explainable/data/demo_model.keras`` (a ~60k-parameter CNN:
64x64x3 pixels in [0, 255] -> 5 logits, its class names stored in the file's
metadata by ``keras_explainable.data.metadata.write_class_names``) and a few
128x128 sample PNGs under ``data/samples/``, then prints the accuracy on new
images and how often the Grad-CAM peak lands on the object (pointing game).
Takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # see README, Troubleshooting

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from keras_explainable.data.metadata import write_class_names  # noqa: E402

CLASSES = ("circle", "square", "triangle", "cross", "star")
SIZE = 64  # the model's input size
SUPERSAMPLE = 4  # shapes are drawn larger and shrunk: smooth edges
DATA = Path(__file__).resolve().parents[1] / "src" / "keras_explainable" / "data"


# --------------------------------------------------------------------------- drawing


def _texture(rng, size: int) -> np.ndarray:
    """A random background, float RGB in [0, 255]."""
    y, x = np.mgrid[0:size, 0:size] / size
    kind = rng.integers(4)
    if kind == 0:  # stripes at a random angle and frequency
        angle, frequency = rng.uniform(0, math.pi), rng.uniform(3, 10)
        wave = np.sin(2 * math.pi * frequency * (x * math.cos(angle) + y * math.sin(angle)))
        pattern = (wave > 0).astype(float) if rng.random() < 0.5 else (wave + 1) / 2
    elif kind == 1:  # checkers
        cells = rng.integers(3, 9)
        pattern = ((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(float)
    elif kind == 2:  # smooth noise: a small random grid resized up
        grid = rng.random((rng.integers(3, 8),) * 2).astype(np.float32)
        pattern = np.asarray(
            Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
        )
        pattern = (pattern - pattern.min()) / max(np.ptp(pattern), 1e-6)
    else:  # a linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        pattern = x * math.cos(angle) + y * math.sin(angle)
        pattern = (pattern - pattern.min()) / max(np.ptp(pattern), 1e-6)
    first = rng.uniform(30, 225, 3)
    second = np.clip(first + rng.normal(0, 45, 3), 0, 255)  # a contrast below the shapes'
    image = first + pattern[..., None] * (second - first)
    return image + rng.normal(0, rng.uniform(2, 8), image.shape)


def _polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> list:
    if kind == "square":
        corners = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        points = [(r * 0.75, s * 0.75) for r, s in corners]
    elif kind == "triangle":
        points = [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 4)[:3]]
    elif kind == "star":
        points = [
            (
                (1.0 if i % 2 == 0 else 0.42) * math.cos(a),
                (1.0 if i % 2 == 0 else 0.42) * math.sin(a),
            )
            for i, a in enumerate(np.linspace(0, 2 * math.pi, 11)[:10])
        ]
    elif kind == "cross":
        w = 0.3
        points = [
            (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w),
            (-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
        ]  # fmt: skip
    else:
        raise ValueError(kind)
    cos, sin = math.cos(angle), math.sin(angle)
    return [
        (cx + radius * (px * cos - py * sin), cy + radius * (px * sin + py * cos))
        for px, py in points
    ]


def _colour_apart(rng, background: np.ndarray) -> tuple[int, int, int]:
    """A colour that stands out from the background's mean colour."""
    mean = background.reshape(-1, 3).mean(axis=0)
    for _ in range(50):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - mean).sum() > 240:
            break
    return tuple(int(c) for c in colour)


def draw_image(rng, shapes: list[str], size: int = SIZE):
    """An RGB uint8 image with ``shapes`` drawn on a texture, and their boxes."""
    big = size * SUPERSAMPLE
    background = _texture(rng, size)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).resize(
        (big, big), Image.Resampling.BILINEAR
    )
    draw = ImageDraw.Draw(canvas)
    boxes, placed = [], []
    for kind in shapes:
        for _ in range(100):  # find a place that does not overlap the other shapes
            radius = rng.uniform(0.14, 0.23) * big
            cx, cy = rng.uniform(radius, big - radius, 2)
            if all(math.hypot(cx - x, cy - y) > radius + r + 0.03 * big for x, y, r in placed):
                break
        placed.append((cx, cy, radius))
        colour = _colour_apart(rng, background)
        if kind == "circle":
            draw.ellipse(
                [cx - radius * 0.9, cy - radius * 0.9, cx + radius * 0.9, cy + radius * 0.9],
                fill=colour,
            )
        else:
            draw.polygon(_polygon(kind, cx, cy, radius, rng.uniform(0, 2 * math.pi)), fill=colour)
        scale = size / big
        boxes.append(
            tuple(int(v * scale) for v in (cy - radius, cx - radius, cy + radius, cx + radius))
        )
    for _ in range(rng.integers(0, 3)):  # clutter: thin lines of any colour
        start, end = rng.uniform(0, big, 2), rng.uniform(0, big, 2)
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        draw.line([tuple(start), tuple(end)], fill=colour, width=SUPERSAMPLE)
    image = canvas.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image), boxes


def make_dataset(count: int, seed: int, pairs: float = 0.15):
    """Images, soft labels ``(count, classes)`` and the boxes of the shapes."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, SIZE, SIZE, 3), np.uint8)
    labels = np.zeros((count, len(CLASSES)), np.float32)
    all_boxes = []
    for i in range(count):
        two = rng.random() < pairs
        chosen = rng.choice(len(CLASSES), 2 if two else 1, replace=False)
        images[i], boxes = draw_image(rng, [CLASSES[c] for c in chosen])
        labels[i, chosen] = 1.0 / len(chosen)
        all_boxes.append(dict(zip(chosen.tolist(), boxes, strict=True)))
    return images, labels, all_boxes


# --------------------------------------------------------------------------- model


def build_model() -> keras.Model:
    layers = keras.layers

    def block(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation("relu", name=name)(x)

    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = block(x, 16, "block1")
    x = layers.MaxPooling2D(name="pool1")(x)  # 32 x 32
    x = block(x, 32, "block2")
    x = layers.MaxPooling2D(name="pool2")(x)  # 16 x 16
    x = block(x, 64, "block3")
    x = block(x, 64, "features")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(len(CLASSES), name="predictions")(x)  # logits
    return keras.Model(inputs, outputs, name="shapes_cnn")


def pointing_game(maps: np.ndarray, boxes: list[dict], targets: np.ndarray) -> float:
    hits = 0
    for heatmap, box, target in zip(maps, boxes, targets, strict=True):
        i, j = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        top, left, bottom, right = box[int(target)]
        hits += top <= i <= bottom and left <= j <= right
    return hits / len(maps)


SAMPLES = {  # file name -> shapes drawn, at 128x128
    "circle": ["circle"],
    "star": ["star"],
    "triangle": ["triangle"],
    "square_and_cross": ["square", "cross"],
    "circle_and_triangle": ["circle", "triangle"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=8000, help="training images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=DATA, help="the package's data folder")
    args = parser.parse_args()

    import keras_explainable as ke

    keras.utils.set_random_seed(0)
    x_train, y_train, _ = make_dataset(args.train, seed=1)
    x_test, y_test, boxes = make_dataset(1000, seed=2, pairs=0.0)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    schedule = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1)
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, callbacks=[schedule], verbose=2)

    predicted = model.predict(x_test, verbose=0).argmax(-1)
    truth = y_test.argmax(-1)
    print(f"accuracy on 1000 new single-shape images: {np.mean(predicted == truth):.3f}")
    _, cams = ke.gradcam(model, x_test.astype("float32"), truth, verbose=0)
    print(f"Grad-CAM pointing game on them: {pointing_game(cams[..., 0], boxes, truth):.3f}")

    # save the weights in a fresh, uncompiled copy: no optimizer state in the package
    shipped = build_model()
    shipped.set_weights(model.get_weights())
    args.out.mkdir(parents=True, exist_ok=True)
    shipped.save(args.out / "demo_model.keras")
    write_class_names(args.out / "demo_model.keras", CLASSES)  # explain labels classes by them
    samples = args.out / "samples"
    samples.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    for name, shapes in SAMPLES.items():
        image, _ = draw_image(rng, shapes, size=128)
        Image.fromarray(image).save(samples / f"{name}.png", optimize=True)
    print(f"wrote {args.out / 'demo_model.keras'} (class names inside), {len(SAMPLES)} samples")


if __name__ == "__main__":
    main()
