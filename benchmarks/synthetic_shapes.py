"""A synthetic localization set with exact ground truth, and a small CNN trained on it.

Used by ``benchmarks/localization.py``. Everything here is deterministic from a
seed and made offline:

- **Images** ``64 x 64 x 3`` (values in ``[0, 255]``): one object of one of five
  classes (circle, square, triangle, cross, star), drawn at a random place, size
  (radius 7-12 px, so the object's box covers about 3-13% of the image), angle
  and colour over a random texture (stripes, checkers, smooth noise or a
  gradient), with 0-2 thin clutter lines of any colour on top. The textures and
  shape outlines are those of ``scripts/train_demo_model.py`` (imported, not
  copied); the drawing here also rasterises each object's own mask, so the
  **boxes are tight**: ``(x_min, y_min, x_max, y_max)``, inclusive pixel indices,
  around the pixels the object covers (at least half-covered after the 4x
  supersampled drawing is shrunk), the convention of ``ke.wsol``.
- **Model** ``shapes_cnn``: Rescaling(1/255) -> 3 x [Conv3x3-BN-ReLU (8, 16, 32
  channels), MaxPool] -> Conv3x3-BN-ReLU 64 ("features", 8 x 8, the CAM layer)
  -> GlobalAveragePooling -> Dense(5) logits; 25k parameters, 4.4 M multiply-adds
  per image (so that deletion/insertion, thousands of forward passes per method,
  stay affordable on a CPU). Trained with Adam (3e-3, then 1e-3 and 3e-4 over the
  last quarter) on 4000 images for 12 epochs, batch 32 — 74 s (+9 s drawing)
  with JAX on this project's 2-core CPU lightly loaded, about 2 minutes while
  other jobs share the cores; 92.5% accuracy on the 200 test images — and
  cached as a ``.keras`` file, so every backend explains the same weights
  (whichever backend trains it first; the run is seeded).

The cache lives in ``$KE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/keras-explainable``,
i.e. ``~/.cache/keras-explainable``), never in the repository.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
SUPERSAMPLE = 4
RADIUS = (7.0, 12.0)  # object radius in pixels of the 64 x 64 image
TRAIN_IMAGES = 4000
EPOCHS = 12
BATCH = 32
TRAIN_SEED, TEST_SEED = 11, 12
#: bump when the data or the model changes: the cached model's file name holds it
VERSION = 1


def cache_dir() -> Path:
    """``$KE_CACHE_DIR``, else ``$XDG_CACHE_HOME/keras-explainable`` (``~/.cache/...``)."""
    if os.environ.get("KE_CACHE_DIR"):
        return Path(os.environ["KE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "keras-explainable"


def _demo_drawing():
    """The texture/shape helpers of ``scripts/train_demo_model.py`` (loaded by path)."""
    path = ROOT / "scripts" / "train_demo_model.py"
    spec = importlib.util.spec_from_file_location("_ke_train_demo_model", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        helpers = module.CLASSES, module._texture, module._polygon, module._colour_apart
    except (OSError, AttributeError) as error:
        raise RuntimeError(
            f"The synthetic set reuses the drawing helpers of {path} (CLASSES, _texture, "
            f"_polygon, _colour_apart); they could not be loaded: {error}"
        ) from error
    return helpers


CLASSES, _texture, _polygon, _colour_apart = _demo_drawing()


def draw(rng: np.random.Generator, label: int, size: int = SIZE):
    """One image (uint8 ``(size, size, 3)``) with an object of class ``label``, and its box."""
    from PIL import Image, ImageDraw

    big = size * SUPERSAMPLE
    background = _texture(rng, size)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).resize(
        (big, big), Image.Resampling.BILINEAR
    )
    mask = Image.new("L", (big, big), 0)
    radius = rng.uniform(*RADIUS) * SUPERSAMPLE
    cx, cy = rng.uniform(radius, big - radius, 2)
    angle = rng.uniform(0, 2 * math.pi)
    colour = _colour_apart(rng, background)
    kind = CLASSES[label]
    for target, fill in ((ImageDraw.Draw(canvas), colour), (ImageDraw.Draw(mask), 255)):
        if kind == "circle":
            r = radius * 0.9
            target.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            target.polygon(_polygon(kind, cx, cy, radius, angle), fill=fill)
    clutter = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 3)):
        start, end = rng.uniform(0, big, 2), rng.uniform(0, big, 2)
        line_colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        clutter.line([tuple(start), tuple(end)], fill=line_colour, width=SUPERSAMPLE)
    image = np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS))
    covered = np.asarray(mask.resize((size, size), Image.Resampling.BOX)) >= 128
    rows, cols = np.nonzero(covered)
    box = (cols.min(), rows.min(), cols.max(), rows.max())
    return image, np.asarray(box, np.int64), covered


def make_dataset(count: int, seed: int):
    """``count`` images (float32, [0, 255]), labels ``(count,)``, boxes ``(count, 4)``, masks."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, SIZE, SIZE, 3), np.float32)
    labels = rng.integers(0, len(CLASSES), count)
    boxes = np.zeros((count, 4), np.int64)
    masks = np.zeros((count, SIZE, SIZE), bool)
    for i in range(count):
        images[i], boxes[i], masks[i] = draw(rng, int(labels[i]))
    return images, labels, boxes, masks


def build_model():
    """The benchmark's CNN: 8 x 8 features of 64 channels -> GAP -> Dense logits."""
    import keras

    layers = keras.layers

    def block(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return layers.Activation("relu", name=name)(x)

    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = block(x, 8, "block1")
    x = layers.MaxPooling2D(name="pool1")(x)  # 32 x 32
    x = block(x, 16, "block2")
    x = layers.MaxPooling2D(name="pool2")(x)  # 16 x 16
    x = block(x, 32, "block3")
    x = layers.MaxPooling2D(name="pool3")(x)  # 8 x 8
    x = block(x, 64, "features")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(len(CLASSES), name="logits")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn")


def model_path() -> Path:
    return cache_dir() / "localization" / f"shapes_cnn-v{VERSION}.keras"


def load_or_train(verbose: bool = True, retrain: bool = False):
    """The cached trained model (trained and saved first if missing), and a note on it."""
    import keras

    path = model_path()
    if path.exists() and not retrain:
        model = keras.saving.load_model(path, compile=False)
        return model, f"loaded from cache {path}"
    start = time.perf_counter()
    keras.utils.set_random_seed(TRAIN_SEED)
    x, y, _, _ = make_dataset(TRAIN_IMAGES, TRAIN_SEED)
    drawn = time.perf_counter() - start
    model = build_model()
    steps = EPOCHS * math.ceil(TRAIN_IMAGES / BATCH)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(steps * 0.75), int(steps * 0.9)], [3e-3, 1e-3, 3e-4]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=2 if verbose else 0)
    trained = time.perf_counter() - start - drawn
    shipped = build_model()  # an uncompiled copy: no optimizer state in the cache
    shipped.set_weights(model.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    shipped.save(path)
    note = (
        f"trained on {TRAIN_IMAGES} images x {EPOCHS} epochs with the {keras.backend.backend()} "
        f"backend in {trained:.0f} s (+{drawn:.0f} s drawing), cached at {path}"
    )
    return shipped, note
