"""KerasHub vision transformers from small configs (no download): every CAM method on tokens.

``ViTImageClassifier`` (32 x 32 images, 8 x 8 patches: a class token + 4 x 4
patch tokens) and ``DeiTImageClassifier`` (a class and a distillation token in
front). Their encoders are layers holding the blocks as attributes, not
functional models: the default layer, the paths into them and the taps on the
blocks all go through layer attributes. keras-hub is optional (skipped where
it is not installed).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_explainable as ke
from tests.test_token_grid import CAMS, assert_unchanged, state

from .models import jitted, seeded, uninitialized

keras_hub = pytest.importorskip("keras_hub")

SMALL = {"image_shape": (32, 32, 3), "patch_size": 8, "num_layers": 2, "num_heads": 2,
         "hidden_dim": 16}  # fmt: skip


def vit():
    with uninitialized():
        backbone = keras_hub.models.ViTBackbone(mlp_dim=32, **SMALL)
    return seeded(keras_hub.models.ViTImageClassifier(backbone, 3, activation=None), 1)


def deit():
    with uninitialized():
        backbone = keras_hub.models.DeiTBackbone(intermediate_dim=32, **SMALL)
    return seeded(keras_hub.models.DeiTImageClassifier(backbone, 3, activation=None), 2)


MODELS = {}  # built once per module (JAX: their programs are what costs)


def model_of(build):
    if build not in MODELS:
        MODELS[build] = build()
    return MODELS[build]


@pytest.fixture(scope="module", autouse=True)
def _drop_models():
    yield
    MODELS.clear()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("build", [vit, deit])
def test_every_cam_method_on_the_patch_grid(build, x):
    model = model_of(build)
    before = state(model)
    exposed = ke.inspection.expose(model)
    (tap,) = exposed.activation_taps  # a class token: the last block's input
    assert "transformer_block_2" in tap.path and tap.link == "input", tap
    every = jitted(  # one program on JAX (eagerly, JAX compiled every op of every method)
        lambda inputs: [
            getattr(ke.methods.cams, name)(exposed, inputs, [0, 2])[1] for name in CAMS
        ],
        model,
    )
    for name, maps in zip(CAMS, every(x)):
        maps = keras.ops.convert_to_numpy(maps)
        assert maps.shape == (2, 4, 4, 1), name  # 16 patches: the prefix tokens dropped
        assert np.isfinite(maps).all() and np.abs(maps).max() > 0, name
    assert_unchanged(model, before)


def test_paths_into_the_encoder(x):
    model = model_of(vit)
    block = ke.inspection.get_nested_layer(model, ("vit_encoder", "transformer_block_2"))
    assert type(block).__name__ == "ViTEncoderBlock"
    query = ke.inspection.get_nested_layer(block, ("mha", "query"))  # inside Keras' own layer
    assert isinstance(query, keras.layers.EinsumDense)
    with pytest.raises(ValueError, match=r"no layer named 'vit_encoder/transformer_blok_2'.*"
                       r"Did you mean '[^']*vit_encoder/transformer_block_2'"):  # fmt: skip
        ke.inspection.get_nested_layer(model, ("vit_encoder", "transformer_blok_2"))
    with pytest.raises(ValueError, match="names 2 layers.*Give the full path"):
        ke.inspection.get_nested_layer(model, ("mlp", "dense_1"))
    paths = ["/".join(p[-2:]) for p, _ in ke.inspection.flatten_layers(model)]
    assert "transformer_block_1/mha" in paths and "mha/query" not in paths  # Keras' own: closed
    # A block called inside the encoder's call is tapped like any layer
    exposed = ke.inspection.expose(model, ("vit_encoder", "transformer_block_2", "ln_1"))
    _, maps = jitted(lambda inputs: ke.methods.cams.gradcam(exposed, inputs, [1, 1]), model)(x)
    assert tuple(maps.shape) == (2, 4, 4, 1) and np.abs(keras.ops.convert_to_numpy(maps)).max() > 0
