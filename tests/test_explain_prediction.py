"""ke.explain_prediction: top class, automatic spatial layer (nested models too), numbers."""

import keras
import numpy as np
import pytest
from PIL import Image

import keras_explainable as ke
from keras_explainable.explanation import METHODS, Explanation, explain_prediction, get_method
from tests import models, reference


def _gradcam_reference(model, x, units):
    """Grad-CAM of a conv -> conv('features') -> GAP -> Dense model, positive-normalized."""
    act, kernel, _ = models.np_gap_dense_parts(model, x)
    maps = models.np_gradcam_gap_dense(act, kernel, np.asarray(units)[None])
    return reference.positive_normalize(maps)[0]


@pytest.fixture(params=["nested_sequential", "nested_functional", "gap_dense_cnn"])
def model(request):
    return getattr(models, request.param)()


def test_top_class_spatial_layer_and_gradcam_numbers(model):
    x = models.inputs(1, seed=3)
    logits = keras.ops.convert_to_numpy(model(x))[0]
    explanation = explain_prediction(model, x[0], top_k=2)

    assert isinstance(explanation, Explanation)
    top_two = list(np.argsort(-logits)[:2])
    assert explanation.target_ids == top_two
    np.testing.assert_allclose(explanation.scores, logits[top_two], rtol=1e-5, atol=1e-5)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert [t.probability for t in explanation.targets] == pytest.approx(
        list(probabilities[top_two]), abs=1e-5
    )
    # the automatic layer is the conv map feeding the global pooling, found inside the
    # nested base model, and reported so that it can be passed back as `layer=`
    expected_layer = "features" if model.name == "gap_dense_cnn" else "base/features"
    assert explanation.layer == expected_layer
    assert explanation.method == "gradcam"
    assert explanation.heatmaps.shape == (2, models.H, models.W)
    np.testing.assert_allclose(
        np.moveaxis(explanation.heatmaps, 0, -1), _gradcam_reference(model, x, top_two), atol=1e-4
    )
    again = explain_prediction(model, x[0], top_k=2, layer=explanation.layer)
    np.testing.assert_allclose(again.heatmaps, explanation.heatmaps, atol=1e-6)


def test_layer_as_name_index_path_and_layer_object():
    model = models.nested_sequential()
    x = models.inputs(1, seed=4)[0]
    base = model.get_layer("base")
    automatic = explain_prediction(model, x).heatmaps
    for layer in ("features", "base/features", ("base", "features"), 0, base,
                  base.get_layer("features")):  # fmt: skip
        np.testing.assert_allclose(explain_prediction(model, x, layer=layer).heatmaps, automatic,
                                   atol=1e-6, err_msg=str(layer))  # fmt: skip
    conv1 = explain_prediction(model, x, layer="conv1")
    assert conv1.layer == "base/conv1"
    assert not np.allclose(conv1.heatmaps, automatic)


def test_targets_by_index_and_by_name():
    model = models.gap_dense_cnn()
    x = models.inputs(1, seed=5)
    names = ["zero", "one", "two", "three", "four"]
    explanation = explain_prediction(model, x[0], targets=[4, "one"], class_names=names)
    assert explanation.target_ids == [4, 1]
    assert explanation.target_names == ["four", "one"]
    assert explanation.targets[0].label == "four"
    np.testing.assert_allclose(
        np.moveaxis(explanation.heatmaps, 0, -1), _gradcam_reference(model, x, [4, 1]), atol=1e-4
    )
    single = explain_prediction(model, x[0], targets=2)
    assert single.target_ids == [2] and single.target_names == [None]
    assert single.targets[0].label == "class 2"
    as_dict = explain_prediction(model, x[0], targets=[3], class_names={3: "three"})
    assert as_dict.target_names == ["three"]


def test_other_methods_match_the_shortcuts():
    model = models.gap_dense_cnn()
    x = models.inputs(1, seed=6)
    top = int(np.argmax(keras.ops.convert_to_numpy(model(x))[0]))
    explanation = explain_prediction(model, x[0], method="gradients")
    assert explanation.layer is None and explanation.target_ids == [top]
    _, expected = ke.gradients(model, x, np.array([top]), verbose=0)
    np.testing.assert_allclose(explanation.heatmaps[0], expected[0, ..., 0], atol=1e-5)
    gradcampp = explain_prediction(model, x[0], method="Grad-CAM++")
    assert gradcampp.method == "gradcampp"
    _, expected = ke.gradcampp(model, x, np.array([top]), verbose=0)
    np.testing.assert_allclose(gradcampp.heatmaps[0], expected[0, ..., 0], atol=1e-5)


def test_pil_images_and_uint8_arrays_are_resized_to_the_model_input():
    model = models.gap_dense_cnn()  # 12 x 12 x 3
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)
    explanation = explain_prediction(model, picture, preprocessing="scale01")
    assert explanation.inputs.shape == (1, 12, 12, 3)
    expected = np.stack(
        [
            np.asarray(
                Image.fromarray(pixels[..., c].astype(np.float32), mode="F").resize(
                    (12, 12), Image.Resampling.BILINEAR
                )
            )
            for c in range(3)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(explanation.inputs[0], expected / 255.0, atol=1e-5)
    assert explanation.image.size == (30, 24)  # the picture keeps its own resolution
    from_array = explain_prediction(model, pixels, preprocessing="scale01")
    np.testing.assert_allclose(from_array.inputs, explanation.inputs, atol=1e-5)
    np.testing.assert_allclose(from_array.heatmaps, explanation.heatmaps, atol=1e-5)
    gray = explain_prediction(model, Image.fromarray(pixels[..., 0]))  # 1 -> 3 channels
    assert gray.inputs.shape == (1, 12, 12, 3)
    np.testing.assert_array_equal(gray.inputs[0, ..., 0], gray.inputs[0, ..., 2])


def test_overlay_and_png_repr():
    model = models.gap_dense_cnn()
    pixels = np.random.default_rng(1).integers(0, 256, (20, 16, 3), dtype=np.uint8)
    explanation = explain_prediction(model, pixels, top_k=2)
    first = explanation.overlay()
    assert isinstance(first, Image.Image) and first.size == (16, 20) and first.mode == "RGB"
    expected = ke.utils.overlay(pixels, explanation.targets[1].heatmap, alpha=0.5)
    np.testing.assert_array_equal(np.asarray(explanation.overlay(1)), expected)
    with pytest.raises(IndexError):
        explanation.overlay(2)
    png = explanation._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gradcam" in repr(explanation)


def test_model_is_left_untouched():
    model = models.nested_sequential()
    before = [w.copy() for w in model.get_weights()]
    attributes = set(vars(model))
    explain_prediction(model, models.inputs(1)[0], method="scorecam")
    assert set(vars(model)) == attributes
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_errors():
    model = models.nested_sequential()
    x = models.inputs(1)[0]
    with pytest.raises(ValueError, match=r"Unknown method 'gradkam'.*Known methods: cam, gradcam"):
        explain_prediction(model, x, method="gradkam")
    with pytest.raises(ValueError, match=r"no layer named 'featurs'.*Did you mean 'features'"):
        explain_prediction(model, x, layer="featurs")
    with pytest.raises(ValueError, match="takes no `layer`"):
        explain_prediction(model, x, layer="features", method="gradients")
    with pytest.raises(ValueError, match="out of range"):
        explain_prediction(model, x, targets=[7])
    with pytest.raises(ValueError, match="Unknown class name 'cat'"):
        explain_prediction(model, x, targets=["cat"])
    with pytest.raises(ValueError, match="top_k=9 exceeds"):
        explain_prediction(model, x, top_k=9)
    with pytest.raises(ValueError, match="a batch of 2"):
        explain_prediction(model, models.inputs(2))
    with pytest.raises(ValueError, match="`class_names` has 2 names"):
        explain_prediction(model, x, class_names=["a", "b"])
    with pytest.raises(TypeError, match="Keras 3 model"):
        explain_prediction(object(), x)


def test_method_catalogue():
    assert {"gradcam", "gradcampp", "scorecam", "layercam", "xgradcam", "hirescam", "eigencam",
            "ablationcam", "cam", "gradients", "occlusion", "rise"} <= set(METHODS)  # fmt: skip
    for name, info in METHODS.items():
        assert info.name == name and info.family in ("CAM", "gradient", "perturbation", "attention")
        assert info.reference and info.summary and info.title
        assert info.uses_layer == (info.family == "CAM")
    assert get_method("Score-CAM") is METHODS["scorecam"]
    assert get_method("saliency") is METHODS["gradients"]
