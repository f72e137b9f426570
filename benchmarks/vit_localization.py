"""Localization and faithfulness of the transformer methods on a small ViT (issue 14).

The model is a **hybrid ViT** (Dosovitskiy et al., ICLR 2021, section 3.1: the
patches are taken from a CNN feature map instead of the raw pixels): a small
conv stem (3 x [Conv3x3-BN-ReLU] with 8, 16, 32 channels, max-pooling after the
first two: a 16 x 16 x 32 map whose units see at most 18 x 18 px), a 2 x 2 patch
embedding of that map (``Conv2D(64, 2, strides=2)``: an 8 x 8 grid of tokens,
8 x 8 px each) -> a class token and learned position embeddings -> 2 pre-norm
blocks of ``keras.layers.MultiHeadAttention`` (width 64, 4 heads, MLP 128) ->
the final norm -> ``Dense(5)`` on the class token. Everything after the stem is
a plain ViT; the class token is the only way the patches reach the classifier.
A plain ViT (8 x 8 pixel patches, width 32) reached only 35.5 % test accuracy on
5 classes after 30 epochs (10 min): too weak a model to judge explanations on.

Training (``load_or_train``): the synthetic shapes set
(``benchmarks/synthetic_shapes.py``, 4000 images), a random rotation / flip of
the square per image and epoch (the classes are invariant to them), AdamW
(weight decay 0.05) with one epoch of linear warm-up to ``PEAK_LR`` then cosine
decay, label smoothing 0.1, batch 32, ``EPOCHS`` epochs; cached next to the CNN
(``$KE_CACHE_DIR/localization/shapes_vit-v<VERSION>.weights.h5``; weights
only: the architecture is built here, and the weights load on every backend).

Rows: Grad-CAM on the tokens (the normalised input of the last block, as
pytorch-grad-cam recommends for ViTs, on its 8 x 8 patch grid), Grad-CAM on
the layer ``ke.gradcam`` picks by itself (the last block's input), attention
rollout, transformer attribution, and the random and centred baselines of
``benchmarks/localization.py``. Columns: pointing game (GT class, 4 px
tolerance), energy pointing game, deletion AUC (16 steps, black substrate) and
insertion AUC (16 steps, blurred substrate; softmax probability) on the 200
test images, the protocol of the CNN table.

Run it once per backend::

    KERAS_BACKEND=tensorflow python benchmarks/vit_localization.py [--images 200]

Results: ``benchmarks/results/vit-localization-<backend>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import keras  # noqa: E402
import localization  # noqa: E402
import numpy as np  # noqa: E402
import synthetic_shapes as shapes  # noqa: E402

import keras_explainable as ke  # noqa: E402

BACKEND = keras.backend.backend()
#: bump when the data, the model or the recipe changes: the cached weights' file name holds it
VERSION = 2
EPOCHS = 12
WARMUP_EPOCHS = 1
PEAK_LR = 2e-3
LABEL_SMOOTHING = 0.1
BLOCKS = 2
DIM = 64
HEADS = 4


class ClassToken(keras.layers.Layer):
    """A learned class token in front of the patch tokens."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros")

    def call(self, tokens):
        batch = keras.ops.shape(tokens)[0]
        token = keras.ops.broadcast_to(self.token, (batch, 1, tokens.shape[-1]))
        return keras.ops.concatenate([keras.ops.cast(token, tokens.dtype), tokens], axis=1)


class PositionEmbedding(keras.layers.Layer):
    """A learned embedding per token position."""

    def build(self, input_shape):
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.embedding = self.add_weight(shape=tuple(input_shape[1:]), initializer=init)

    def call(self, tokens):
        return tokens + keras.ops.cast(self.embedding, tokens.dtype)


def build_model():
    """The hybrid ViT: a small conv stem, 2 x 2 patches of its map, a class token, 2 blocks."""
    layers = keras.layers
    inputs = keras.Input((shapes.SIZE, shapes.SIZE, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for stage, filters in enumerate((8, 16, 32)):  # at 64, 32 and 16 px
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stem{stage}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"stem{stage}_bn")(x)
        x = layers.Activation("relu", name=f"stem{stage}_relu")(x)
        if stage < 2:
            x = layers.MaxPooling2D(name=f"stem{stage}_pool")(x)
    x = layers.Conv2D(DIM, 2, strides=2, name="patches")(x)  # (8, 8, DIM): 8 x 8 px per token
    x = layers.Reshape((64, DIM), name="tokens")(x)
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="positions")(x)
    for block in range(BLOCKS):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm1")(x)
        h = layers.MultiHeadAttention(HEADS, DIM // HEADS, name=f"block{block}_attention")(h, h)
        x = layers.Add(name=f"block{block}_add1")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm2")(x)
        h = layers.Dense(2 * DIM, activation="gelu", name=f"block{block}_mlp1")(h)
        x = layers.Add(name=f"block{block}_add2")(
            [x, layers.Dense(DIM, name=f"block{block}_mlp2")(h)]
        )
    x = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    outputs = layers.Dense(len(shapes.CLASSES), name="logits")(x[:, 0])
    return keras.Model(inputs, outputs, name="shapes_vit")


def model_path() -> Path:
    return shapes.cache_dir() / "localization" / f"shapes_vit-v{VERSION}.weights.h5"


def dihedral(x, rng):
    """Each image under one of the 8 rotations / flips of the square (the classes keep)."""
    out = np.empty_like(x)
    kinds = rng.integers(0, 8, len(x))
    for kind in range(8):
        rows = np.nonzero(kinds == kind)[0]
        moved = np.rot90(x[rows], kind % 4, axes=(1, 2))
        out[rows] = moved[:, :, ::-1] if kind >= 4 else moved
    return out


def load_or_train(retrain: bool = False):
    """The cached trained ViT (trained first if missing) and a note on it."""
    path, model = model_path(), build_model()
    if path.exists() and not retrain:
        model.load_weights(path)
        return model, f"loaded from cache {path}"
    start = time.perf_counter()
    keras.utils.set_random_seed(shapes.TRAIN_SEED)
    x, y, _, _ = shapes.make_dataset(shapes.TRAIN_IMAGES, shapes.TRAIN_SEED)
    drawn = time.perf_counter() - start
    per_epoch = math.ceil(shapes.TRAIN_IMAGES / shapes.BATCH)
    warmup, steps = WARMUP_EPOCHS * per_epoch, EPOCHS * per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps - warmup, alpha=0.01, warmup_target=PEAK_LR, warmup_steps=warmup
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.05),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=LABEL_SMOOTHING
        ),
        metrics=["accuracy"],
    )
    onehot = np.eye(len(shapes.CLASSES), dtype="float32")[y]
    rng = np.random.default_rng(shapes.TRAIN_SEED)
    for epoch in range(EPOCHS):  # a fresh rotation / flip of every image each epoch
        history = model.fit(dihedral(x, rng), onehot, batch_size=shapes.BATCH, verbose=0)
        print(f"  epoch {epoch + 1}/{EPOCHS}: loss {history.history['loss'][0]:.3f}, "
              f"accuracy {history.history['accuracy'][0]:.3f}", flush=True)  # fmt: skip
    trained = time.perf_counter() - start - drawn
    shipped = build_model()  # no optimizer state in the cache
    shipped.set_weights(model.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    shipped.save_weights(path)
    note = (
        f"trained on {shapes.TRAIN_IMAGES} images x {EPOCHS} epochs with the {BACKEND} backend "
        f"in {trained:.0f} s (+{drawn:.0f} s drawing; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end), cached at {path}"
    )
    return shipped, note


def methods(model):
    tokens = ke.inspection.expose(model, arguments=f"block{BLOCKS - 1}_norm1")
    return {
        "gradcam (tokens)": lambda x, y, b: ke.gradcam(tokens, x, y, batch_size=b, verbose=0),
        # the layer ke.gradcam picks by itself: the last block's input (block0_add2's output)
        "gradcam (default layer)": lambda x, y, b: ke.gradcam(model, x, y, batch_size=b, verbose=0),
        "attention_rollout": lambda x, y, b: ke.attention_rollout(
            model, x, y, batch_size=b, verbose=0
        ),
        "transformer_attribution": lambda x, y, b: ke.transformer_attribution(
            model, x, y, batch_size=b, verbose=0
        ),
    }


def run(args) -> dict:
    started = time.perf_counter()
    load = os.getloadavg()[0]
    model, note = load_or_train(args.retrain)
    x, y, boxes, _ = shapes.make_dataset(args.images, shapes.TEST_SEED)
    accuracy = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    print(f"ViT: {note}; test accuracy {accuracy:.3f}", flush=True)
    maps, seconds = {}, {}
    for name, explain in methods(model).items():
        tick = time.perf_counter()
        maps[name] = np.asarray(explain(x, y, args.batch_size)[1])[..., 0]
        seconds[name] = time.perf_counter() - tick
    for name in localization.BASELINES:
        maps[name] = localization.baseline_maps(name, len(x), x.shape[1:3])
    causal = localization.causal_all(model, x, y, maps, args.steps, args.batch_size)
    rows = {}
    for name, heat in maps.items():
        pointing = ke.metrics.pointing_game(heat, boxes=boxes, tolerance=args.tolerance, classes=y)
        energy = ke.metrics.energy_pointing_game(heat, boxes=boxes)
        rows[name] = {
            "pointing": pointing.accuracy,
            "energy_pointing": float(energy.proportion),
            "deletion": localization._mean_se(causal[name][0]),
            "insertion": localization._mean_se(causal[name][1]),
            "explain_s": seconds.get(name, 0.0),
        }
        print(f"{name:24s} pointing {pointing.accuracy:.3f}  deletion "
              f"{rows[name]['deletion']['mean']:.3f}", flush=True)  # fmt: skip
    return {
        "backend": BACKEND,
        "keras": keras.__version__,
        "model": note,
        "test_accuracy": accuracy,
        "protocol": {"images": args.images, "tolerance_px": args.tolerance, "steps": args.steps},
        "rows": rows,
        "loadavg_start": load,
        "wall_s": time.perf_counter() - started,
    }


def markdown(report) -> str:
    lines = [
        f"ViT on the synthetic shapes ({report['backend']}, Keras {report['keras']}): "
        f"{report['model']}; test accuracy {report['test_accuracy']:.3f}; "
        f"{report['protocol']['images']} test images, ground-truth class explained; pointing "
        f"tolerance {report['protocol']['tolerance_px']} px; deletion / insertion "
        f"{report['protocol']['steps']} steps (black / blurred substrate, softmax probability). "
        f"Run {report['wall_s']:.0f} s, load average {report['loadavg_start']:.1f} at the start.",
        "",
        "| method | pointing game ↑ | energy PG ↑ | deletion AUC ↓ | insertion AUC ↑ "
        "| explain (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["rows"].items():
        deletion, insertion = row["deletion"], row["insertion"]
        lines.append(
            f"| {name} | {row['pointing']:.3f} | {row['energy_pointing']:.3f} | "
            f"{deletion['mean']:.3f} ± {deletion['se']:.3f} | "
            f"{insertion['mean']:.3f} ± {insertion['se']:.3f} | {row['explain_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--tolerance", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args(argv)
    report = run(args)
    out = HERE / "results" / f"vit-localization-{BACKEND}"
    out.parent.mkdir(exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
