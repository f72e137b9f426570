"""ke.utils.overlay and ke.utils.visualize: sizes, and pixels that change where the map is high."""

import io

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import keras_explainable as ke
from keras_explainable.utils import as_display_image, get_dims, overlay, visualize
from tests import reference

JET = matplotlib.colormaps["jet"]


def _image(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _blend(image, value, alpha):
    """numpy reference: the image blended with jet(value) everywhere."""
    colour = np.array(JET(value)[:3]) * 255.0
    return np.clip(np.round((1 - alpha) * image.astype(np.float64) + alpha * colour), 0, 255)


# --------------------------------------------------------------------------- overlay


def test_overlay_matches_a_numpy_blend():
    image = _image(6, 10)
    for value in (0.0, 0.25, 1.0):
        result = overlay(image, np.full((3, 5), value, np.float32), alpha=0.4)
        assert result.shape == (6, 10, 3) and result.dtype == np.uint8
        np.testing.assert_allclose(result, _blend(image, value, 0.4), atol=1)


def test_overlay_changes_pixels_only_where_the_map_is_high():
    image = _image(8, 8)
    heatmap = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)  # resized 2x2 -> 8x8
    result = overlay(image, heatmap, alpha=0.5).astype(int)
    cold = overlay(image, np.zeros((2, 2)), alpha=0.5).astype(int)
    # Pillow's bilinear upsampling: rows/cols 0-1 sit on the hot cell, 6-7 on cold ones
    np.testing.assert_allclose(result[:2, :2], _blend(image, 1.0, 0.5)[:2, :2], atol=1)
    np.testing.assert_array_equal(result[6:, :], cold[6:, :])
    np.testing.assert_array_equal(result[:, 6:], cold[:, 6:])
    assert np.abs(result[:2, :2] - cold[:2, :2]).mean() > 40
    # every pixel: the numpy blend with the bilinearly upsampled map (half-pixel centres)
    resized = reference.bilinear_resize(heatmap[None, ..., None], (8, 8))[0, ..., 0]
    expected = np.round(0.5 * image + 0.5 * 255.0 * JET(resized)[..., :3])
    np.testing.assert_allclose(result, expected, atol=1)
    changed = np.abs(result - cold).sum(axis=-1) > 0
    assert not changed[resized == 0].any()  # untouched where the map is 0
    assert (np.abs(result - cold).sum(axis=-1)[resized > 0.1] > 20).all()


def test_overlay_inputs_gray_float_pil_and_backend_tensors():
    gray = np.linspace(-1.0, 1.0, 48, dtype=np.float32).reshape(6, 8)  # min-max scaled
    pixels = as_display_image(gray)
    assert pixels.min() == 0 and pixels.max() == 255
    rgb = np.repeat(pixels[..., None], 3, axis=-1)
    heatmap = np.full((2, 2), 0.5)
    expected = _blend(rgb, 0.5, 0.3)
    np.testing.assert_allclose(overlay(gray, heatmap, alpha=0.3), expected, atol=1)
    np.testing.assert_allclose(overlay(gray[..., None], heatmap, alpha=0.3), expected, atol=1)
    np.testing.assert_allclose(
        overlay(Image.fromarray(rgb), heatmap[..., None], alpha=0.3), expected, atol=1
    )
    import keras

    tensor = keras.ops.convert_to_tensor(heatmap)
    np.testing.assert_allclose(overlay(gray, tensor, alpha=0.3), expected, atol=1)


def test_overlay_alpha_and_map_range():
    image = _image()
    assert np.array_equal(overlay(image, np.random.rand(4, 4), alpha=0.0), image)
    heatmap = np.random.default_rng(1).random((4, 4))
    scaled = (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min())
    # a map outside [0, 1] is min-max normalized first
    np.testing.assert_array_equal(overlay(image, 5 * heatmap - 3), overlay(image, scaled))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"alpha": 1.5}, ValueError),
        ({"alpha": "0.5"}, TypeError),
        ({"cmap": "no-such-colormap"}, ValueError),
    ],
)
def test_overlay_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        overlay(_image(), np.zeros((2, 2)), **kwargs)


def test_overlay_rejects_several_maps_at_once():
    with pytest.raises(ValueError, match="one per call"):
        overlay(_image(), np.zeros((2, 2, 2)))


# --------------------------------------------------------------------------- visualize


def test_visualize_returns_a_figure_with_one_panel_per_image():
    figure = visualize([_image(), _image(seed=1), _image(seed=2)], titles=["a", None, "c"])
    assert isinstance(figure, Figure)
    shown = [axis for axis in figure.axes if axis.images]
    assert len(shown) == 3
    assert [axis.get_title() for axis in shown] == ["a", "", "c"]


def test_visualize_to_buffer_has_the_figure_size_and_shows_the_overlay():
    image = np.full((8, 8, 3), 128, np.uint8)
    hot_corner = np.array([[1.0, 0.0], [0.0, 0.0]])
    buffer = io.BytesIO()
    picture = visualize(
        [image], overlays=[hot_corner], figsize=(2, 2), dpi=50, to_buffer=buffer,
        overlay_alpha=0.75,
    )  # fmt: skip
    assert isinstance(picture, Image.Image)
    assert picture.size == (100, 100)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    cold = np.zeros((2, 2))
    plain = visualize([image], overlays=[cold], figsize=(2, 2), dpi=50, to_buffer=True)
    with_map = np.asarray(picture.convert("RGB"), np.int32)
    without = np.asarray(plain.convert("RGB"), np.int32)
    difference = np.abs(with_map - without).sum(axis=-1)
    # the top-left quarter (the hot cell) changes a lot, the bottom-right one stays
    assert difference[5:30, 5:30].mean() > 100
    assert difference[75:95, 75:95].max() < 10


def test_visualize_to_file_and_batches(tmp_path):
    batch = np.random.default_rng(0).random((5, 6, 6, 1)).astype("float32")
    path = tmp_path / "grid.png"
    figure = visualize(batch, overlays=batch, rows=2, figsize=(3, 2), dpi=40, to_file=path)
    assert isinstance(figure, Figure)
    with Image.open(path) as saved:
        assert saved.size == (120, 80)
    assert len([axis for axis in figure.axes if axis.images]) == 5


def test_visualize_seed_layout_images_then_maps_then_overlays():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    cams = np.random.default_rng(1).random((3, 8, 8, 1)).astype("float32")
    figure = visualize(
        images=[*images, *cams, *images], overlays=[None] * (2 * len(images)) + [*cams]
    )
    panels = [axis for axis in figure.axes if axis.images]
    assert len(panels) == 9
    assert sum(len(axis.images) == 2 for axis in panels) == 3  # picture + overlay


def test_get_dims():
    assert get_dims(24) == (3, 8)
    assert get_dims(3) == (1, 3)
    assert get_dims(5, rows=2) == (2, 3)
    assert get_dims(5, cols=2) == (3, 2)
    with pytest.raises(ValueError, match="holds 4 pictures"):
        get_dims(10, rows=2, cols=2)


def test_visualize_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="`titles` has 1 entries for 2 images"):
        visualize([_image(), _image()], titles=["only one"])
    with pytest.raises(ValueError, match="`overlays` has 3 entries"):
        visualize([_image(), _image()], overlays=[None, None, None])
    with pytest.raises(ValueError, match="empty"):
        visualize([])
    with pytest.raises(ValueError, match="expected"):
        visualize([np.zeros((2, 2, 2, 2))])


def test_utils_is_reachable_from_the_package():
    assert ke.utils.visualize is visualize and ke.utils.overlay is overlay
