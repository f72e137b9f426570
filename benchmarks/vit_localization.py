"""Localization and faithfulness of the transformer methods on a tiny ViT (issue 14).

A tiny ViT (64 x 64 images, 8 x 8 patches -> an 8 x 8 grid + a class token,
2 blocks of ``keras.layers.MultiHeadAttention``, width 32) is trained on the
synthetic shapes set (``benchmarks/synthetic_shapes.py``) and cached next to the
CNN (``$KE_CACHE_DIR/localization/shapes_vit-v<VERSION>.weights.h5``; weights
only: the architecture is built here). Rows: Grad-CAM on the tokens (the
normalised input of the last block, as pytorch-grad-cam recommends, on its
8 x 8 patch grid), attention rollout, transformer attribution, and the random
and centred baselines of ``benchmarks/localization.py``. Columns: pointing game
(GT class, 4 px tolerance) and deletion AUC (16 steps, black substrate, softmax
probability) on the test images, with the same protocol as the CNN table.

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
VERSION = 1
EPOCHS = 30
BLOCKS = 2
DIM = 32


class ClassToken(keras.layers.Layer):
    """A learned class token in front of the patch tokens."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros")

    def call(self, tokens):
        token = keras.ops.broadcast_to(self.token, (keras.ops.shape(tokens)[0], 1, DIM))
        return keras.ops.concatenate([token, tokens], axis=1)


class PositionEmbedding(keras.layers.Layer):
    """A learned embedding per token position."""

    def build(self, input_shape):
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.embedding = self.add_weight(shape=tuple(input_shape[1:]), initializer=init)

    def call(self, tokens):
        return tokens + self.embedding


def build_model():
    layers = keras.layers
    inputs = keras.Input((shapes.SIZE, shapes.SIZE, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = layers.Conv2D(DIM, 8, strides=8, name="patches")(x)  # 8 x 8 patches
    x = layers.Reshape((64, DIM), name="tokens")(x)
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="positions")(x)
    for block in range(BLOCKS):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm1")(x)
        h = layers.MultiHeadAttention(4, DIM // 4, name=f"block{block}_attention")(h, h)
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


def load_or_train(retrain: bool = False):
    """The cached trained ViT (trained first if missing) and a note on it."""
    path, model = model_path(), build_model()
    if path.exists() and not retrain:
        model.load_weights(path)
        return model, f"loaded from cache {path}"
    start = time.perf_counter()
    keras.utils.set_random_seed(shapes.TRAIN_SEED)
    x, y, _, _ = shapes.make_dataset(shapes.TRAIN_IMAGES, shapes.TRAIN_SEED)
    steps = EPOCHS * math.ceil(shapes.TRAIN_IMAGES / shapes.BATCH)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps, warmup_target=None)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=EPOCHS, batch_size=shapes.BATCH, verbose=2)
    shipped = build_model()
    shipped.set_weights(model.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    shipped.save_weights(path)
    seconds = time.perf_counter() - start
    note = (
        f"trained on {shapes.TRAIN_IMAGES} images x {EPOCHS} epochs with the {BACKEND} backend "
        f"in {seconds:.0f} s, cached at {path}"
    )
    return shipped, note


def methods(model):
    tokens = ke.inspection.expose(model, arguments=f"block{BLOCKS - 1}_norm1")
    return {
        "gradcam (tokens)": lambda x, y, b: ke.gradcam(tokens, x, y, batch_size=b, verbose=0),
        "attention_rollout": lambda x, y, b: ke.attention_rollout(
            model, x, y, batch_size=b, verbose=0
        ),
        "transformer_attribution": lambda x, y, b: ke.transformer_attribution(
            model, x, y, batch_size=b, verbose=0
        ),
    }


def run(args) -> dict:
    model, note = load_or_train(args.retrain)
    x, y, boxes, _ = shapes.make_dataset(args.images, shapes.TEST_SEED)
    accuracy = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    print(f"ViT: {note}; test accuracy {accuracy:.3f}", flush=True)
    maps, seconds = {}, {}
    for name, explain in methods(model).items():
        tick = time.perf_counter()
        maps[name] = explain(x, y, args.batch_size)[1][..., 0]
        seconds[name] = time.perf_counter() - tick
    for name in localization.BASELINES:
        maps[name] = localization.baseline_maps(name, len(x), x.shape[1:3])
    causal = localization.causal_all(model, x, y, maps, args.steps, args.batch_size)
    rows = {}
    for name, heat in maps.items():
        pointing = ke.metrics.pointing_game(heat, boxes=boxes, tolerance=args.tolerance, classes=y)
        rows[name] = {
            "pointing": pointing.accuracy,
            "deletion": localization._mean_se(causal[name][0]),
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
    }


def markdown(report) -> str:
    lines = [
        f"ViT on the synthetic shapes ({report['backend']}, Keras {report['keras']}): "
        f"{report['model']}; test accuracy {report['test_accuracy']:.3f}; "
        f"{report['protocol']['images']} test images.",
        "",
        "| method | pointing game ↑ | deletion AUC ↓ |",
        "|---|---|---|",
    ]
    for name, row in report["rows"].items():
        deletion = row["deletion"]
        lines.append(
            f"| {name} | {row['pointing']:.3f} | {deletion['mean']:.3f} ± {deletion['se']:.3f} |"
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
